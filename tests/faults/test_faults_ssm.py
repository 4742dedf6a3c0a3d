"""SSM faults under /answer: the Plivo token lives in an SSM SecureString and SSM fails.

The caller hears the built-in apology (200, no template rendered: the signature could not be checked) and
the operator gets an ERROR, fast: the app's own SSM client makes two short attempts, and the failure is
remembered for a few seconds so the next callbacks do not ask SSM again (a broken SSM must not add seconds
to every callback inside the API Lambda's 15 s). Faults are injected with a before-send hook on the app's
real SSM client; once SSM is back, the token is read and used.
"""

from __future__ import annotations

import time

import pytest
from botocore.exceptions import EndpointConnectionError

from chalicelib import resources
from tests.faults.faultlib import (
    BASE,
    PLIVO_QUERY,
    TOKEN,
    FaultHook,
    api_event,
    invoke,
    query_dict,
    signed_headers,
)

PARAM = "/callflow/faults/plivo-token"


@pytest.fixture
def token_in_ssm(aws, env):
    aws.client("ssm").put_parameter(Name=PARAM, Value=TOKEN, Type="SecureString")
    env.delenv("PLIVO_AUTH_TOKEN")
    env.setenv("PLIVO_AUTH_TOKEN_PARAM", PARAM)
    resources.reset()


def answer_status() -> tuple[int, str]:
    uri = f"{BASE}/answer?{PLIVO_QUERY}"
    event = api_event("GET", "/answer", headers=signed_headers("GET", uri), query=query_dict(PLIVO_QUERY))
    reply = invoke(event)
    return reply["statusCode"], reply["body"]


def _no_connection(request):
    raise EndpointConnectionError(endpoint_url=request.url)


def test_ssm_client_is_short_and_tries_twice():
    config = resources.ssm_client().meta.config
    assert (config.connect_timeout, config.read_timeout) == (1.0, 2.0)
    assert config.retries == {"total_max_attempts": 2, "mode": "standard"}


@pytest.mark.usefixtures("token_in_ssm")
def test_broken_ssm_is_asked_once_per_window_then_recovers(env, json_logs):
    env.setattr(resources, "TOKEN_FAILURE_SECONDS", 0.5, raising=False)
    hook = FaultHook(resources.ssm_client(), "before-send.ssm.GetParameter", _no_connection)

    status, body = answer_status()
    assert status == 200 and "We are sorry" in body and "Traceback" not in body
    assert len(hook.injected) == 2  # two attempts in all, then the apology

    for _ in range(5):  # inside the window: the apology again, and SSM is not asked
        assert answer_status() == (status, body)
    assert len(hook.injected) == 2 and hook.passed == []

    time.sleep(0.6)
    hook.remove()  # SSM is back: the next callback reads the token and is served
    status, body = answer_status()
    assert status == 200 and "<Response>" in body and "We are sorry" not in body
    refused = [line for line in json_logs.lines if "SSM" in str(line)]
    assert refused, "the refusal must say why"
    assert all(TOKEN not in str(line) for line in json_logs.lines)

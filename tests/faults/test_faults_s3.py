"""S3 faults under /answer: a warm container serves its last good template, a cold one the fallback.

Every request is the real Plivo answer URL query string (PLIVO.md), signed with plivo-python and sent as
an API Gateway proxy event to the deployed handler. Faults happen at the AWS boundary: botocore hooks on
the app's own S3 client (throttling, 500, read timeout, no connection), moto IAM (access denied) and a
bucket that is really deleted.
"""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError
from moto.core import enable_iam_authentication

from chalicelib import resources
from chalicelib.answer.render import BUILTIN_FALLBACK
from tests.faults.faultlib import (
    BASE,
    BUCKET,
    PLIVO_QUERY,
    REGION,
    FaultHook,
    api_event,
    invoke,
    query_dict,
    s3_error,
    signed_headers,
    spoken,
    verbs,
)

CALL_UUID = "5260e820-958c-11e4-b6bf-498d468c930b"
# What templates/PlivoTest.xml says for X-PH-Test=Sample (routes.json rule 1).
FRESH = "This is the Plivo test call. Your test header says Sample."


def answer() -> dict:
    """One signed GET of the real answer URL, through the Lambda handler."""
    uri = f"{BASE}/answer?{PLIVO_QUERY}"
    event = api_event("GET", "/answer", headers=signed_headers("GET", uri), query=query_dict(PLIVO_QUERY))
    reply = invoke(event)
    assert reply["statusCode"] == 200, reply
    assert reply["headers"]["Content-Type"] == "application/xml"
    return reply


def _throttled(request):
    return s3_error(request.url, 503, "SlowDown", "Please reduce your request rate.")


def _internal(request):
    return s3_error(request.url, 500, "InternalError", "We encountered an internal error.")


def _read_timeout(request):
    raise ReadTimeoutError(endpoint_url=request.url)


def _no_connection(request):
    raise EndpointConnectionError(endpoint_url=request.url)


HOOKED = {
    "throttling": _throttled,
    "http-500": _internal,
    "read-timeout": _read_timeout,
    "no-connection": _no_connection,
}


class Outage:
    """Starts one kind of S3 fault against the app's current S3 client."""

    def __init__(self, kind: str, admin: boto3.Session) -> None:
        self.kind = kind
        self.admin = admin
        self.hook: FaultHook | None = None
        self.iam_user = None

    def grant(self, env) -> None:
        """For access-denied: the app runs as an IAM user that may read the templates (moto enforces IAM)."""
        if self.kind != "access-denied":
            return
        iam = self.admin.client("iam")
        iam.create_user(UserName="answer-fn")
        self._policy("Allow")
        key = iam.create_access_key(UserName="answer-fn")["AccessKey"]
        env.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        env.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        env.delenv("AWS_SESSION_TOKEN", raising=False)
        resources.reset()

    def _policy(self, effect: str) -> None:
        document = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": effect, "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/*"}
            ],
        }
        self.admin.client("iam").put_user_policy(
            UserName="answer-fn", PolicyName="templates", PolicyDocument=json.dumps(document)
        )

    def start(self) -> None:
        if self.kind in HOOKED:
            self.hook = FaultHook(resources.s3_client(), "before-send.s3.GetObject", HOOKED[self.kind])
        elif self.kind == "access-denied":
            self._policy("Deny")
        elif self.kind == "deleted-bucket":
            s3 = self.admin.client("s3")
            for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
                s3.delete_object(Bucket=BUCKET, Key=item["Key"])
            s3.delete_bucket(Bucket=BUCKET)
            assert BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
        else:
            raise AssertionError(self.kind)

    def request(self) -> dict:
        if self.kind == "access-denied":
            with enable_iam_authentication():
                return answer()
        return answer()

    def check_reached(self) -> None:
        """The fault really happened (guards against a test that passes because S3 was never asked)."""
        if self.hook is not None:
            assert self.hook.injected, "the app never asked S3 during the outage"


KINDS = [*HOOKED, "access-denied", "deleted-bucket"]


@pytest.fixture
def admin(aws):
    return aws if isinstance(aws, boto3.Session) else boto3.Session(region_name=REGION)


@pytest.mark.parametrize("kind", KINDS)
def test_warm_container_serves_the_stale_template(kind, admin, env, json_logs):
    env.setenv("TEMPLATE_CACHE_TTL", "0")  # every request revalidates, so every request meets the fault
    resources.reset()
    outage = Outage(kind, admin)
    outage.grant(env)
    warm = outage.request()
    assert spoken(warm["body"])[0] == FRESH
    store = resources.template_store()
    requests_before = store.s3_requests

    outage.start()
    stale = outage.request()
    outage.check_reached()
    assert store.s3_requests > requests_before, "the warm container did not try to revalidate"
    assert stale["body"] == warm["body"], f"{kind}: expected the cached template, got {stale['body']}"
    assert verbs(stale["body"]) == verbs(warm["body"])
    warnings = [line for line in json_logs.lines if line["level"] in ("WARNING", "ERROR")]
    assert warnings, f"{kind}: serving a stale template must leave a log line"

    # S3 stays down: later calls still hear the cached template, not silence or the apology
    assert outage.request()["body"] == warm["body"]


@pytest.mark.parametrize("kind", KINDS)
def test_cold_container_serves_the_fallback_and_says_why(kind, admin, env, json_logs):
    outage = Outage(kind, admin)
    outage.grant(env)
    outage.start()
    reply = outage.request()
    outage.check_reached()
    assert reply["body"] == BUILTIN_FALLBACK
    assert verbs(reply["body"]) == ["Speak", "Hangup"]
    assert spoken(reply["body"])[0].startswith("We are sorry")
    assert "Traceback" not in reply["body"]
    if kind in HOOKED or kind == "deleted-bucket":
        errors = [line for line in json_logs.at("ERROR") if line.get("call_uuid") == CALL_UUID]
        assert errors, f"{kind}: no ERROR line with the CallUUID: {json_logs.lines}"
        assert errors[0].get("cause"), errors[0]
        assert errors[0].get("served") == "built-in"
    else:
        said = json.dumps(json_logs.lines)
        assert "AccessDenied" in said or "denied" in said.lower(), json_logs.lines


def test_transient_throttle_is_absorbed_by_one_retry(admin, json_logs):
    """One throttled GetObject: botocore's retry gets the template, the caller hears the real thing."""
    hook = FaultHook(resources.s3_client(), "before-send.s3.GetObject", _throttled, times=1)
    reply = answer()
    assert len(hook.injected) == 1 and hook.passed
    assert spoken(reply["body"])[0] == FRESH

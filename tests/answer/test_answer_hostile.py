"""Strangers' requests (issue 10 #6, #11, #13): whatever an unsigned request holds, it gets 403 and at most a
WARNING; ERROR is kept for callflow's own faults. Requests go to the deployed handler as API Gateway REST
events (`app(event, None)`, as Lambda calls it)."""

from __future__ import annotations

import base64
import json
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib import resources
from devtools.events import proxy_event
from tests.answer.answerlib import BASE, TOKEN, signed_headers

DOMAIN = BASE.split("/")[2]
SIGNED_LOOKING = {"X-Plivo-Signature-V3": "bm90IGl0", "X-Plivo-Signature-V3-Nonce": "12345"}


def invoke(event: dict) -> dict:
    from app import app

    return app(event, None)


def event(method: str, path: str, headers: dict, body: str | None = None, b64: bool = False, **kw) -> dict:
    return proxy_event(
        method, path, domain=DOMAIN, headers={"Host": DOMAIN, **headers}, body=body, is_base64=b64, **kw
    )


def errors(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


NESTED_LISTS = '{"a":' + "[" * 2000 + "]" * 2000 + "}"  # RecursionError in json.loads
NESTED_OBJECTS = '{"a":' * 400 + "1" + "}" * 400  # parses; ~2 KB; recursion in the signing string
HOSTILE = {
    "nested-lists": (NESTED_LISTS, "application/json"),
    "nested-objects": (NESTED_OBJECTS, "application/json"),
    "nested-no-content-type": (NESTED_OBJECTS, None),
    "lone-surrogate": ('{"a":"\\ud800"}', "application/json"),
    "json-array": ("[1, 2, 3]", "application/json"),
    "json-scalar": ('"just a string"', "application/json"),
    "1001-form-fields": ("&".join(f"f{i}=v" for i in range(1001)), "application/x-www-form-urlencoded"),
    "over-256-KB": ("From=" + "x" * (256 * 1024), "application/x-www-form-urlencoded"),
}


@pytest.mark.parametrize("path", ["/answer", "/hangup"])
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_bodies_are_403_at_warning(caplog, path, name):
    """Regression: these reached parsing code that failed (RecursionError, UnicodeEncodeError) or were
    logged at ERROR as "cannot check the signature"; a stranger could page the operator."""
    body, content_type = HOSTILE[name]
    headers = dict(SIGNED_LOOKING)
    if content_type:
        headers["Content-Type"] = content_type
    caplog.set_level(logging.INFO, logger="callflow")
    reply = invoke(event("POST", path, headers, body))
    assert reply["statusCode"] == 403, reply
    assert "Traceback" not in reply["body"]
    assert errors(caplog) == []
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == ["callback rejected"]


def test_a_lone_surrogate_in_a_header_is_403(caplog):
    caplog.set_level(logging.INFO, logger="callflow")
    headers = {"X-Plivo-Signature-V3": "\ud800", "X-Plivo-Signature-V3-Nonce": "\udfff"}
    assert invoke(event("GET", "/answer", headers, query={"From": ["\ud800"]}))["statusCode"] == 403
    assert errors(caplog) == []


def test_signature_headers_are_checked_before_the_body_is_read(caplog, monkeypatch):
    from chalicelib import handlers

    def boom(request):
        raise AssertionError("the body of an unsigned request was parsed")

    monkeypatch.setattr(handlers, "_body_params", boom)
    caplog.set_level(logging.INFO, logger="callflow")
    reply = invoke(event("POST", "/answer", {"Content-Type": "application/json"}, NESTED_LISTS))
    assert reply["statusCode"] == 403
    [record] = caplog.records
    assert record.levelno == logging.WARNING and "X-Plivo-Signature-V3-Nonce" in record.reason


def test_host_is_never_used_when_api_gateway_gives_a_domain(env, caplog):
    """Regression (issue 10 #11): with PUBLIC_BASE_URL unset, an empty requestContext.domainName fell back
    to the client's Host header, so a request signed for another host verified."""
    env.delenv("PUBLIC_BASE_URL")
    resources.reset()
    query = {"CallUUID": ["c-host"]}
    evil = "http://evil.example/api/answer?CallUUID=c-host"
    e = event("GET", "/answer", signed_headers("GET", evil), query=query)
    e["headers"]["Host"] = "evil.example"
    e["requestContext"]["domainName"] = ""
    caplog.set_level(logging.INFO, logger="callflow")
    assert invoke(e)["statusCode"] == 403
    assert errors(caplog) == []


@pytest.mark.parametrize(
    "unsupported",
    [
        {  # HTTP API (v2) and Lambda Function URL payload format 2.0
            "version": "2.0",
            "routeKey": "ANY /answer",
            "rawPath": "/answer",
            "rawQueryString": "",
            "headers": {"host": DOMAIN},
            "requestContext": {"http": {"method": "GET", "path": "/answer"}, "domainName": DOMAIN},
            "isBase64Encoded": False,
        },
        {  # ALB
            "requestContext": {"elb": {"targetGroupArn": "arn:aws:elasticloadbalancing:x"}},
            "httpMethod": "GET",
            "path": "/answer",
            "headers": {},
            "body": "",
            "isBase64Encoded": False,
        },
    ],
)
def test_not_a_rest_api_event_is_logged_and_a_plain_500(caplog, unsupported):
    """Regression (issue 10 #13): Chalice answered 500 {"Code": "InternalServerError"} with nothing logged."""
    caplog.set_level(logging.INFO, logger="callflow")
    reply = invoke(unsupported)
    assert reply["statusCode"] == 500 and "Traceback" not in reply["body"]
    [record] = errors(caplog)
    assert "REST API" in record.getMessage()


# ---------------------------------------------------------------- the property

texts = st.text(max_size=40)  # lone surrogates included
header_names = st.one_of(
    st.sampled_from(
        [
            "X-Plivo-Signature-V3",
            "X-Plivo-Signature-Ma-V3",
            "X-Plivo-Signature-V3-Nonce",
            "Content-Type",
            "content-type",
            "Host",
        ]
    ),
    st.text(min_size=1, max_size=20),
)
content_types = st.sampled_from(
    ["application/json", "application/x-www-form-urlencoded", "text/plain", "", "application/json; x=\ud800"]
)
json_like = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), texts),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=30,
)
bodies = st.one_of(
    st.none(),
    texts,
    st.binary(max_size=200),
    json_like.map(json.dumps),
    st.integers(1, 3000).map(lambda n: '{"a":' + "[" * n + "]" * n + "}"),
    st.integers(1, 2000).map(lambda n: "&".join(["a=b"] * n)),
)


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=st.sampled_from(["GET", "POST"]),
    path=st.sampled_from(["/answer", "/hangup"]),
    signed_looking=st.booleans(),
    headers=st.dictionaries(header_names, texts, max_size=6),
    query=st.dictionaries(texts, st.lists(texts, min_size=1, max_size=3), max_size=4),
    body=bodies,
    content_type=content_types,
    b64=st.booleans(),
)
def test_no_unsigned_request_gets_past_403_or_logs_an_error(
    caplog, method, path, signed_looking, headers, query, body, content_type, b64
):
    """Arbitrary bodies, headers and query without a valid signature: 403, and nothing at ERROR."""
    caplog.clear()
    caplog.set_level(logging.INFO, logger="callflow")
    all_headers = {**(SIGNED_LOOKING if signed_looking else {}), "Content-Type": content_type, **headers}
    if isinstance(body, bytes):
        text, b64 = base64.b64encode(body).decode(), True
    elif body is not None and b64:
        text = base64.b64encode(body.encode("utf-8", "surrogatepass")).decode()
    else:
        text = body
    reply = invoke(event(method, path, all_headers, text, b64, query=query or None))
    assert reply["statusCode"] == 403, reply
    assert errors(caplog) == [], [r.__dict__ for r in errors(caplog)]
    assert TOKEN not in caplog.text

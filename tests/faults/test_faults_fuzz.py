"""Hypothesis fuzz of /answer and /hangup with signature checks ON.

Requests go to the deployed handler as API Gateway proxy events (`app(event, None)`, like Lambda; bodies
sometimes base64-flagged, invalid UTF-8 included) and, for part of the run, through chalice.test.Client.
Some requests are signed correctly with plivo-python (so the 200 path runs for real), others carry a
mutated, missing or garbage signature. The invariant: a 403, or a 200 with valid Plivo XML whose verbs are
exactly the template's; never a 5xx, never a caller's value turned into markup. The template echoes
`call.From`, a header, a SIP header, every parameter, and a header inside an attribute.
"""

from __future__ import annotations

import base64
import json
import os
import re
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from chalicelib.answer import plivo_xml
from chalicelib.calls.jobs import STATUSES, JobRepository
from tests.faults.faultlib import (
    BASE,
    BUCKET,
    PREFIX,
    ROOT,
    TABLE,
    all_tags,
    api_event,
    apply_env,
    create_stack,
    form,
    invoke,
    make_job,
    plivo_sign,
    plivo_sign_parts,
    xml_tree,
)

ECHO = """<?xml version="1.0" encoding="UTF-8"?>
<Response>
  <Speak language="{{ headers.Loop }}">{{ call.From }}</Speak>
  <Speak>{{ headers.Name }}|{{ sip.To }}|{% for k in call %}{{ k }}={{ call[k] }};{% endfor %}</Speak>
  <Play>https://example.com/{{ call.To }}.mp3</Play>
  <Hangup/>
</Response>
"""
ECHO_TAGS = ["Response", "Speak", "Speak", "Play", "Hangup"]
FALLBACK_TAGS = ["Response", "Speak", "Hangup"]
EMPTY_RESPONSE_TAGS = ["Response"]
BIG = 30_000  # below this many characters of parameters the echo always fits Plivo's 100 KB
MAX_BODY = 256 * 1024  # callbacks.MAX_BODY_BYTES: bigger bodies are not Plivo's, a 403 is fine
KNOWN_JOBS = ("fz-placed", "fz-dialing", "fz-unknown")

# XML 1.0 Char production: what an XML document can carry at all.
NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

MARKERS = [
    "<Dial>",
    "</Speak><Dial><Number>15550001</Number></Dial><Speak>",
    "&",
    "&amp;",
    "]]>",
    '"',
    "'",
    "<!--",
    "<?xml version='1.0'?>",
    "<!DOCTYPE x [<!ENTITY e 'boom'>]>",
    "&e;",
    "{{ 7*7 }}",
    "{% for x in call %}",
    "\x00",
    "\x07",
    "\x1b[0m",
    "\r\n",
    "\r",
    "\ufffe",
    "\ud7ff",
    "\U0001f600",
    "\u202e",
    "%00",
    "%3CDial%3E",
    "+",
    "=",
    "&From=1",
    ";",
    " ",
]


@pytest.fixture(scope="module")
def chalice_client(stack):
    from chalice.test import Client

    from app import app

    # A stage absent from .chalice/config.json: the environment is the test's, not a deploy stage's.
    with Client(app, stage_name="faults", project_dir=str(ROOT)) as client:
        yield client


@pytest.fixture(scope="module")
def stack():
    """One moto account for the whole module: hypothesis runs thousands of examples against it."""
    from moto import mock_aws

    with pytest.MonkeyPatch.context() as mp:
        apply_env(mp)
        with mock_aws():
            session = create_stack(templates=False)
            s3 = session.client("s3")
            s3.put_object(Bucket=BUCKET, Key=PREFIX + "Echo.xml", Body=ECHO.encode())
            s3.put_object(Bucket=BUCKET, Key=PREFIX + "routes.json", Body=b'{"default": "Echo"}')
            repo = JobRepository(session.resource("dynamodb").Table(TABLE))
            for call_id, status in zip(KNOWN_JOBS, ("placed", "dialing", "unknown"), strict=True):
                repo.add(make_job(call_id, status=status, attempts=1, request_uuid="r-" + call_id))
            yield repo


def normalized(value: str) -> str:
    """What an XML parser reads back for `value` echoed as text: non-XML characters dropped, line ends
    normalised (XML 1.0 section 2.11)."""
    return NOT_XML_CHAR.sub("", value).replace("\r\n", "\n").replace("\r", "\n")


# ---------------------------------------------------------------- strategies

plain_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
value_text = st.one_of(
    plain_text,
    st.sampled_from(MARKERS),
    st.builds(lambda a, m, b: a + m + b, plain_text, st.sampled_from(MARKERS), plain_text),
)
name_text = st.one_of(
    st.sampled_from(
        [
            "CallUUID",
            "To",
            "Direction",
            "X-PH-Name",
            "x-ph-loop",
            "X-PH-Loop",
            "SIP-H-To",
            "X-PH-Template",
            "CallStatus",
            "Event",
            "X-PH-",
            "SIP-H-",
            "call_id",
        ]
    ),
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12),
    st.builds(lambda m: "X-PH-" + m, st.sampled_from(MARKERS)),
)
pad = st.sampled_from([0, 0, 0, 0, 0, 0, 200, 40_000, 120_000, 300_000])
SIGNATURE_MODES = ["valid"] * 6 + [
    "valid-ma",
    "valid-among",
    "missing",
    "no-nonce",
    "garbage",
    "tampered",
    "wrong-nonce",
    "wrong-url",
    "wrong-token",
]


@st.composite
def requests(draw, path: str):
    """(event, expectation) for one callback request. Expectation: 'render' (must be 200 + the route's
    XML), 'reject' (must be 403), 'either' (403 or 200 + valid XML), 'method' (not GET/POST)."""
    method = draw(st.sampled_from(["GET"] * 4 + ["POST"] * 6 + ["other"]))
    if method == "other":
        method = draw(st.sampled_from(["PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "get", "TRACE"]))
    params = draw(st.dictionaries(name_text, value_text, max_size=8))
    params.pop("From", None)
    source = draw(value_text) + "x" * draw(pad)
    where = draw(st.sampled_from(["query", "body"])) if method == "POST" else "query"
    query: dict[str, list[str]] = {}
    body_params: dict = {}
    if path == "/hangup":
        call_id = draw(st.one_of(st.sampled_from(KNOWN_JOBS), value_text))
        query["call_id"] = [call_id]
        params.pop("call_id", None)
    if method == "POST":
        split = draw(st.integers(0, len(params)))
        for index, (key, value) in enumerate(params.items()):
            if index < split:
                query.setdefault(key, []).append(value)
            else:
                body_params[key] = value
    else:
        for key, value in params.items():
            query.setdefault(key, []).append(value)
        if params and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(params)))
            query[key].append(draw(value_text))  # a repeated query parameter
    if where == "body":
        body_params["From"] = source
    else:
        query["From"] = [source]

    encoding = draw(st.sampled_from(["form", "form", "json", "empty"])) if method == "POST" else "none"
    if encoding == "form":
        raw = form(body_params) if body_params else b""
        content_type = "application/x-www-form-urlencoded"
    elif encoding == "json":
        if draw(st.booleans()):
            body_params = {
                **body_params,
                "Extra": draw(
                    st.one_of(
                        st.integers(), st.booleans(), st.dictionaries(name_text, plain_text, max_size=2)
                    )
                ),
            }
        raw = json.dumps(body_params).encode()
        content_type = "application/json"
    else:
        raw = b""
        content_type = None
        if method == "POST":
            for key, value in body_params.items():  # no body: everything moves to the query
                query.setdefault(key, []).append(value)
            body_params = {}
    clean = True
    mangle = draw(st.sampled_from(["none"] * 6 + ["content-type", "bytes", "invalid-utf8", "bad-base64"]))
    if method == "POST" and mangle == "content-type":
        content_type = draw(
            st.one_of(
                st.none(),
                st.sampled_from(
                    [
                        "text/plain",
                        "application/xml",
                        "multipart/form-data; boundary=x",
                        "application/json",
                        "application/x-www-form-urlencoded; charset=latin-1",
                        "*/*",
                        ";;;",
                        "\u00e9/\u00e9",
                    ]
                ),
            )
        )
        clean = False
    elif method == "POST" and mangle == "bytes":
        raw = draw(st.binary(max_size=200)) + b"\xff" * draw(pad)
        clean = False
    elif method == "POST" and mangle == "invalid-utf8":
        raw = raw + b"&Bad=%FF%FE\xff\xfe\xc3\x28"
        clean = False
    base64_body = method == "POST" and (
        mangle in ("invalid-utf8", "bad-base64")
        or _binary(raw)
        or draw(st.sampled_from([False, False, False, True]))
    )

    signing_method = "GET" if method == "GET" else "POST"
    signed_params = {} if method == "GET" or not raw else body_params
    nonce = str(draw(st.integers(0, 10**12)))
    mode = draw(st.sampled_from(SIGNATURE_MODES))
    headers: dict[str, str] = {}

    def sign(base: str = BASE, token: str | None = None) -> str:
        extra = {"token": token} if token else {}
        return plivo_sign_parts(signing_method, base + path, query, signed_params, nonce, **extra)

    good = sign()
    if mode == "valid":
        headers = {"X-Plivo-Signature-V3": good, "X-Plivo-Signature-V3-Nonce": nonce}
    elif mode == "valid-ma":
        headers = {"X-Plivo-Signature-Ma-V3": good, "X-Plivo-Signature-V3-Nonce": nonce}
    elif mode == "valid-among":
        headers = {"X-Plivo-Signature-V3": "bm90IGl0," + good, "X-Plivo-Signature-V3-Nonce": nonce}
    elif mode == "no-nonce":
        headers = {"X-Plivo-Signature-V3": good}
    elif mode == "garbage":
        latin = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=60)
        headers = {"X-Plivo-Signature-V3": draw(latin), "X-Plivo-Signature-V3-Nonce": draw(latin)}
    elif mode == "tampered":
        headers = {"X-Plivo-Signature-V3": good, "X-Plivo-Signature-V3-Nonce": nonce}
        tampered = source + "1"
        if where == "body" and encoding != "empty":
            body_params["From"] = tampered
            raw = form(body_params) if encoding == "form" else json.dumps(body_params).encode()
        else:
            query["From"] = [tampered]
    elif mode == "wrong-nonce":
        headers = {"X-Plivo-Signature-V3": good, "X-Plivo-Signature-V3-Nonce": nonce + "0"}
    elif mode == "wrong-url":
        headers = {
            "X-Plivo-Signature-V3": sign(BASE.replace("fault123", "evil123")),
            "X-Plivo-Signature-V3-Nonce": nonce,
        }
    elif mode == "wrong-token":
        headers = {"X-Plivo-Signature-V3": sign(token="other"), "X-Plivo-Signature-V3-Nonce": nonce}
    if content_type is not None:
        headers["Content-Type"] = content_type

    if mangle == "bad-base64" and method == "POST":
        event = api_event(method, path, headers=headers, query=query, body=None)
        event["body"] = "%%%not base64%%%" + "A" * draw(st.integers(0, 5))
        event["isBase64Encoded"] = True
        clean = False
    else:
        event = api_event(
            method,
            path,
            headers=headers,
            query=query,
            body=raw if method != "GET" else None,
            base64_body=base64_body,
        )

    if method not in ("GET", "POST"):
        expect = "method"
    elif mode in ("valid", "valid-ma", "valid-among") and clean and len(raw) <= MAX_BODY:
        expect = "render"
    elif mode in ("valid", "valid-ma", "valid-among"):
        expect = "either"
    else:
        expect = "reject"
    size = sum(len(k) + len(v) for k, vs in query.items() for v in vs) + len(raw)
    return event, expect, {"From": source, "size": size, "mode": mode, "mangle": mangle}


def _binary(raw: bytes) -> bool:
    """API Gateway hands a body that is not UTF-8 text to Lambda base64-encoded."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


# ---------------------------------------------------------------- the invariant


def _note(expect: str, status: int) -> None:
    """Label each example (pytest --hypothesis-show-statistics shows how many took each path)."""
    try:
        event(f"{expect} -> {status}")
    except Exception:  # noqa: BLE001 - outside a hypothesis test (the oracle self-check)
        pass


def _reply_body(reply: dict) -> str:
    body = reply.get("body") or ""
    return body.decode("utf-8") if isinstance(body, bytes) else body


def _settled_without_xml(status: int, body: str, expect: str, info: dict) -> bool:
    """What every reply must satisfy; True when it is a refusal the expectation allows (no XML to check)."""
    _note(expect, status)
    assert status < 500, (status, body, info)
    assert "Traceback" not in body
    if expect == "method":
        assert status in (403, 405), (status, info)
        return True
    if expect == "reject":
        assert status == 403, (status, body[:300], info)
        return True
    return expect == "either" and status == 403


def check_answer(reply: dict, expect: str, info: dict) -> None:
    status, body = reply["statusCode"], _reply_body(reply)
    if _settled_without_xml(status, body, expect, info):
        return
    assert status == 200, (status, body[:300], info)
    assert reply["headers"]["Content-Type"] == "application/xml"
    assert plivo_xml.problems(body) == [], body[:500]
    assert len(body.encode("utf-8")) <= 100 * 1024
    tags = all_tags(body)
    if tags == ECHO_TAGS:
        first = xml_tree(body).find("Speak").text or ""
        if expect == "render":
            assert first == normalized(info["From"]), (first[:200], info["From"][:200])
    else:
        # Only a reply too big for Plivo may fall back; never a verb smuggled in by a value.
        assert tags == FALLBACK_TAGS, (tags, body[:500])
        assert info["size"] > BIG or expect == "either", (body, info)


def check_hangup(reply: dict, expect: str, info: dict) -> None:
    status, body = reply["statusCode"], _reply_body(reply)
    if _settled_without_xml(status, body, expect, info):
        return
    assert status == 200, (status, body, info)
    assert all_tags(body) == EMPTY_RESPONSE_TAGS and plivo_xml.problems(body) == []


# Examples per run: /answer as Lambda events, /hangup as Lambda events, /answer through chalice.test.Client
# (2 000 in all by default; FAULTS_FUZZ_SCALE=5 for a longer hunt).
SCALE = float(os.environ.get("FAULTS_FUZZ_SCALE", "1"))
ANSWER_EXAMPLES, HANGUP_EXAMPLES, CLIENT_EXAMPLES = (max(1, int(n * SCALE)) for n in (1100, 600, 300))
QUIET = [
    HealthCheck.too_slow,
    HealthCheck.function_scoped_fixture,
    HealthCheck.data_too_large,
    HealthCheck.large_base_example,
]


def fuzz(examples: int):
    return settings(max_examples=examples, deadline=None, database=None, suppress_health_check=QUIET)


@pytest.mark.slow
@fuzz(ANSWER_EXAMPLES)
@given(case=requests("/answer"))
def test_fuzz_answer_lambda_events(stack, case):
    event, expect, info = case
    check_answer(invoke(event), expect, info)


@pytest.mark.slow
@fuzz(HANGUP_EXAMPLES)
@given(case=requests("/hangup"))
def test_fuzz_hangup_lambda_events(stack, case):
    event, expect, info = case
    check_hangup(invoke(event), expect, info)
    for call_id in KNOWN_JOBS:
        assert stack.get(call_id)["status"] in STATUSES


@pytest.mark.slow
@fuzz(CLIENT_EXAMPLES)
@given(case=requests("/answer"))
def test_fuzz_answer_through_chalice_test_client(chalice_client, case):
    """The same invariant through chalice's local gateway (query string parsed by Chalice itself)."""
    event, expect, info = case
    if event["isBase64Encoded"] or event["httpMethod"] not in ("GET", "POST"):
        return  # chalice.test.Client sends bodies as given; the Lambda-event tests cover these
    path = "/answer"
    query = event["multiValueQueryStringParameters"]
    if query:
        path += "?" + urlencode(query, doseq=True)
    body = event["body"].encode("utf-8") if event["body"] is not None else b""
    headers = {k: v for k, v in event["headers"].items() if k not in ("Host",)}
    reply = chalice_client.http.request(event["httpMethod"], path, headers=headers, body=body)
    check_answer(
        {"statusCode": reply.status_code, "headers": reply.headers, "body": reply.body.decode("utf-8")},
        expect,
        info,
    )


def test_fuzz_oracle_is_not_blind(stack):
    """The fuzz helpers can tell a good request from a forged one, and invalid UTF-8 in a base64 body
    reaches the handler as bytes."""
    uri = f"{BASE}/answer?From=%3CDial%3E"
    good = plivo_sign("GET", uri, {}, "1")
    headers = {"X-Plivo-Signature-V3": good, "X-Plivo-Signature-V3-Nonce": "1"}
    event = api_event("GET", "/answer", headers=headers, query={"From": ["<Dial>"]})
    reply = invoke(event)
    check_answer(reply, "render", {"From": "<Dial>", "size": 10})
    assert "&lt;Dial&gt;" in reply["body"]
    event["headers"]["X-Plivo-Signature-V3-Nonce"] = "2"
    assert invoke(event)["statusCode"] == 403
    with pytest.raises(AssertionError):
        check_answer(
            {
                "statusCode": 200,
                "headers": {"Content-Type": "application/xml"},
                "body": "<Response><Dial><Number>1</Number></Dial></Response>",
            },
            "render",
            {"From": "x", "size": 1},
        )
    raw = b"From=\xff\xfe&CallUUID=abc"
    event = api_event(
        "POST",
        "/answer",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=raw,
        base64_body=True,
    )
    assert base64.b64decode(event["body"]) == raw
    assert invoke(event)["statusCode"] == 403  # unsigned

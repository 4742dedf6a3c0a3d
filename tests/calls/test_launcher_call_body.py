"""Job → Call API body, checked field for field against what plivo-python sends for the same call."""

from __future__ import annotations

import json
from decimal import Decimal

import plivo
import pytest

from chalicelib.calls.call_body import JobInvalid, build_call_body
from tests.calls.launcherlib import AUTH_ID, AUTH_TOKEN, BASE
from tests.support import call_api_server


@pytest.fixture
def capture():
    """A local HTTP server that records each JSON body it is sent and answers like Plivo."""
    bodies: list[dict] = []
    with call_api_server(lambda handler, raw: bodies.append(json.loads(raw))) as url:
        yield url, bodies


def sdk_body(base_url: str, bodies: list, monkeypatch, **kwargs) -> dict:
    monkeypatch.setattr(plivo.rest.client, "API_VOICE_BASE_URI", f"{base_url}/v1/Account")
    client = plivo.RestClient(AUTH_ID, AUTH_TOKEN)
    client.calls.create(**kwargs)
    return bodies.pop()


@pytest.mark.parametrize(
    "job, sdk_args",
    [
        (
            {
                "call_id": "job-1",
                "to": "14155550100",
                "from": "14155559999",
                "headers": {"CustomerId": "C42", "Lang": "en"},
            },
            {
                "from_": "14155559999",
                "to_": "14155550100",
                "answer_url": f"{BASE}/answer?call_id=job-1",
                "answer_method": "POST",
                "hangup_url": f"{BASE}/hangup?call_id=job-1",
                "hangup_method": "POST",
                "sip_headers": "CustomerId=C42,Lang=en",
            },
        ),
        (
            {
                "call_id": "job 2/x",
                "to": "sip:alice@phone.plivo.com",
                "from": "14155559999",
                "headers": {"Template": "Reminder"},
                "answer_url": "https://other.example/answer",
                "answer_method": "get",
                "caller_name": "Clinic",
                "ring_timeout": Decimal(30),
                "time_limit": Decimal(600),
                "machine_detection": "hangup",
            },
            {
                "from_": "14155559999",
                "to_": "sip:alice@phone.plivo.com",
                "answer_url": "https://other.example/answer",
                "answer_method": "GET",
                "hangup_url": f"{BASE}/hangup?call_id=job%202%2Fx",
                "hangup_method": "POST",
                "sip_headers": "Template=Reminder",
                "caller_name": "Clinic",
                "ring_timeout": 30,
                "time_limit": 600,
                "machine_detection": "hangup",
                "machine_detection_url": f"{BASE}/machine?call_id=job%202%2Fx",
                "machine_detection_method": "POST",
            },
        ),
        (
            {
                "call_id": "vm&1",
                "to": "+442071234567",
                "from": "14155559999",
                "machine_detection": "voicemail:LeaveMessage",
            },
            {
                "from_": "14155559999",
                "to_": "442071234567",
                "answer_url": f"{BASE}/answer?call_id=vm%261",
                "answer_method": "POST",
                "hangup_url": f"{BASE}/hangup?call_id=vm%261",
                "hangup_method": "POST",
                "machine_detection": "true",
                "machine_detection_url": f"{BASE}/machine?call_id=vm%261",
                "machine_detection_method": "POST",
            },
        ),
        (
            {"call_id": "v1-true", "to": "14155550100", "from": "14155559999", "machine_detection": True},
            {
                "from_": "14155559999",
                "to_": "14155550100",
                "answer_url": f"{BASE}/answer?call_id=v1-true",
                "answer_method": "POST",
                "hangup_url": f"{BASE}/hangup?call_id=v1-true",
                "hangup_method": "POST",
                "machine_detection": "true",
                "machine_detection_url": f"{BASE}/machine?call_id=v1-true",
                "machine_detection_method": "POST",
            },
        ),
        (
            {"call_id": "no-headers", "to": "442071234567", "from": "14155559999"},
            {
                "from_": "14155559999",
                "to_": "442071234567",
                "answer_url": f"{BASE}/answer?call_id=no-headers",
                "answer_method": "POST",
                "hangup_url": f"{BASE}/hangup?call_id=no-headers",
                "hangup_method": "POST",
            },
        ),
    ],
)
def test_body_equals_what_plivo_python_sends(job, sdk_args, capture, monkeypatch):
    base_url, bodies = capture
    expected = sdk_body(base_url, bodies, monkeypatch, **sdk_args)
    ours = build_call_body(job, BASE)
    assert ours == expected
    assert json.loads(json.dumps(ours)) == expected  # and it survives JSON as-is


def test_body_goes_over_the_wire_unchanged(capture):
    from chalicelib.calls.plivo_api import PlivoClient

    base_url, bodies = capture
    body = build_call_body(
        {"call_id": "x", "to": "14155550100", "from": "14155559999", "headers": {"A": "1"}}, BASE
    )
    result = PlivoClient(AUTH_ID, AUTH_TOKEN, base_url).create_call(body)
    assert (result.outcome, result.request_uuid, result.api_id) == ("placed", "r-1", "a-1")
    assert bodies == [body]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"headers": {"Customer-Id": "1"}}, "header name 'Customer-Id' may contain only letters"),
        ({"headers": {"Customer Id": "1"}}, "header name 'Customer Id' may contain only letters"),
        ({"headers": {"N" * 25: "1"}}, "is 25 characters long (at most 24)"),
        ({"headers": {"Name": "v" * 121}}, "value is 121 characters long (at most 120)"),
        ({"to": "1415abc0100"}, "to '1415abc0100' must be digits"),
        ({"to": "+1415abc0100"}, "must be digits (E.164, with or without '+')"),
        ({"to": "1415"}, "to '1415' is not a possible phone number"),
        ({"to": "+999123"}, "to '+999123' is not a phone number"),
        ({"to": ""}, "to '' must be digits"),
        ({"from": "ACME"}, "from 'ACME' must be digits"),
        ({"to": "14155559999"}, "to and from must differ"),
        ({"answer_method": "PUT"}, "answer_method 'PUT' must be GET or POST"),
        ({"answer_url": "ftp://x"}, "answer_url 'ftp://x' must be an http(s) URL"),
        ({"ring_timeout": "soon"}, "ring_timeout 'soon' must be a whole number"),
        ({"machine_detection": "maybe"}, "machine_detection 'maybe' must be hangup, voicemail:<Template>"),
        ({"machine_detection": "voicemail:"}, "machine_detection 'voicemail:' must be hangup"),
        ({"machine_detection": "voicemail:Leave-Msg"}, "a template name of 1 to 64 letters and digits"),
        ({"machine_detection": "voicemail:" + "V" * 65}, "must be hangup, voicemail:<Template>"),
        ({"caller_name": "x" * 51}, "caller_name must be text of at most 50 characters"),
    ],
)
def test_invalid_jobs_say_exactly_what_is_wrong(changes, message):
    job = {"call_id": "j", "to": "14155550100", "from": "14155559999", "headers": {"Ok": "1"}, **changes}
    with pytest.raises(JobInvalid) as raised:
        build_call_body(job, BASE)
    assert message in str(raised.value)


def test_to_with_a_plus_is_sent_without_it():
    body = build_call_body({"call_id": "p", "to": "+14155550100", "from": "14155559999"}, BASE)
    assert body["to"] == "14155550100"


def test_a_voicemail_template_keeps_its_case_and_the_answer_url_stays_the_jobs_own():
    job = {
        "call_id": "c",
        "to": "14155550100",
        "from": "14155559999",
        "machine_detection": "Voicemail:LeaveMsg",
        "answer_url": "https://other.example/answer",
    }
    body = build_call_body(job, BASE)
    assert body["machine_detection"] == "true" and body["answer_url"] == "https://other.example/answer"
    from chalicelib.calls.call_body import validate_job

    assert validate_job(job)["machine_detection"] == "voicemail:LeaveMsg"


def test_every_problem_is_reported_at_once():
    with pytest.raises(JobInvalid) as raised:
        build_call_body({"call_id": "j", "to": "abc", "from": "x", "headers": {"a-b": "c d"}}, BASE)
    text = str(raised.value)
    assert "to 'abc'" in text and "from 'x'" in text and "'a-b'" in text and "'c d'" in text


@pytest.mark.parametrize(
    "status, payload, outcome",
    [
        (200, {"request_uuid": "r", "api_id": "a"}, "placed"),
        (201, {"request_uuid": "r", "api_id": "a"}, "placed"),
        (202, {"request_uuid": ["r1", "r2"], "api_id": "a"}, "placed"),
        (401, {"error": "bad auth"}, "auth_error"),
        (429, {}, "retry"),
        (502, {}, "retry"),
        (400, {"error": "invalid to"}, "failed"),
        (405, {}, "failed"),
    ],
)
def test_classify_http_replies(status, payload, outcome):
    from chalicelib.calls.plivo_api import classify

    result = classify(status, payload)
    assert result.outcome == outcome
    if outcome == "placed":
        assert result.request_uuid in ("r", "r1,r2") and result.api_id == "a"
    else:
        assert result.error.startswith(f"Plivo HTTP {status}: ")


def test_client_repr_hides_the_token():
    from chalicelib.calls.plivo_api import PlivoClient

    client = PlivoClient(AUTH_ID, AUTH_TOKEN, "http://127.0.0.1:9")
    assert AUTH_TOKEN not in repr(client) and AUTH_ID in repr(client)

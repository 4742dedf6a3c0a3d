"""The app as a whole: cache behaviour through /answer, cold import, and the /hangup HTTP layer."""

from __future__ import annotations

import subprocess
import sys

import boto3
import pytest

from chalicelib import resources
from tests.answer.answerlib import BASE, ROOT, S3Traffic, form, put, signed_headers
from tests.support import SETTINGS

ANSWER = BASE + "/answer"


def signed_post(client, path: str, params: dict, query: str = ""):
    uri = BASE + path + ("?" + query if query else "")
    headers = {**signed_headers("POST", uri, params), "Content-Type": "application/x-www-form-urlencoded"}
    return client.http.post(path + ("?" + query if query else ""), headers=headers, body=form(params))


def test_thousand_warm_answers_make_no_s3_request_then_revalidate(client, s3):
    app_s3 = S3Traffic(resources.s3_client())
    params = {"CallUUID": "c1", "X-PH-Template": "Reminder", "X-PH-Name": "Ann"}
    assert b"Hello Ann" in signed_post(client, "/answer", params).body
    store = resources.template_store()
    assert store.ttl == 60
    compiles = store.compiles
    app_s3.reset()
    for _ in range(1000):
        assert signed_post(client, "/answer", params).status_code == 200
    assert app_s3.calls == []

    store.ttl = 0.0  # the TTL has passed (the store's own tests use a fake clock for this)
    assert b"Hello Ann" in signed_post(client, "/answer", params).body
    assert len(app_s3.calls) == 1 and "Reminder.xml" in app_s3.calls[0]  # one conditional GET: 304
    assert store.compiles == compiles

    put(s3, "Reminder.xml", "<Response><Speak>Version two for {{ headers.Name }}</Speak></Response>")
    assert b"Version two for Ann" in signed_post(client, "/answer", params).body
    assert store.compiles == compiles + 1


def test_importing_app_creates_no_client_and_reads_no_env():
    probe = f"""
import os, sys
import boto3, botocore.session, chalice, jinja2, defusedxml, markupsafe  # third-party imports first
reads = []
class Spy(dict):
    def __getitem__(self, key):
        reads.append(key); return dict.__getitem__(self, key)
    def get(self, key, default=None):
        reads.append(key); return dict.get(self, key, default)
    def __contains__(self, key):
        reads.append(key); return dict.__contains__(self, key)
os.environ = Spy(os.environ)
def boom(*a, **k):
    raise AssertionError("AWS client created at import")
botocore.session.Session.create_client = boom
sys.path.insert(0, {str(ROOT)!r})
import app
assert app.app.routes["/answer"], "no /answer route"
print("READS", sorted(set(reads)))
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # Libraries may peek at their own variables (HOME, PYTHONTZPATH ...); ours are read lazily.
    reads = eval(done.stdout.split("READS ", 1)[1])
    assert not set(reads) & SETTINGS, reads


@pytest.fixture
def table(s3, env):
    """The calls table (moto, same mock as S3) with one placed job."""
    env.setenv("CALLS_TABLE", "callflow-calls-test")
    resources.reset()
    ddb = boto3.resource("dynamodb", region_name="us-east-1")
    created = ddb.create_table(
        TableName="callflow-calls-test",
        KeySchema=[{"AttributeName": "call_id", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "call_id", "AttributeType": "S"},
            {"AttributeName": "status", "AttributeType": "S"},
            {"AttributeName": "due_at", "AttributeType": "N"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "status-due_at-index",
                "KeySchema": [
                    {"AttributeName": "status", "KeyType": "HASH"},
                    {"AttributeName": "due_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    created.put_item(
        Item={
            "call_id": "job-1",
            "status": "placed",
            "due_at": 1,
            "to": "14155550000",
            "from": "14155551234",
            "headers": {},
            "attempts": 1,
            "request_uuid": "req-1",
        }
    )
    return created


HANGUP = {
    "CallUUID": "cu-9",
    "RequestUUID": "req-1",
    "CallStatus": "completed",
    "HangupCause": "NORMAL_CLEARING",
    "Duration": "12",
    "BillDuration": "60",
    "Event": "Hangup",
    "From": "14155551234",
    "To": "14155550000",
}


def test_hangup_records_the_outcome(client, table):
    reply = signed_post(client, "/hangup", HANGUP, query="call_id=job-1")
    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == "application/xml"
    assert b"<Response/>" in reply.body
    job = table.get_item(Key={"call_id": "job-1"})["Item"]
    assert job["status"] == "completed" and job["outcome"] == "completed"


def test_hangup_bad_signature_is_403_and_records_nothing(client, table):
    uri = BASE + "/hangup?call_id=job-1"
    headers = {**signed_headers("POST", uri, HANGUP), "Content-Type": "application/x-www-form-urlencoded"}
    forged = {**HANGUP, "CallStatus": "busy"}
    reply = client.http.post("/hangup?call_id=job-1", headers=headers, body=form(forged))
    assert reply.status_code == 403
    assert table.get_item(Key={"call_id": "job-1"})["Item"]["status"] == "placed"


def test_hangup_without_call_id_is_acknowledged(client, table):
    reply = signed_post(client, "/hangup", HANGUP)
    assert reply.status_code == 200 and b"<Response/>" in reply.body


def test_hangup_get_with_query_only(client, table):
    from urllib.parse import urlencode

    query = urlencode({**HANGUP, "call_id": "job-1"})
    reply = client.http.get("/hangup?" + query, headers=signed_headers("GET", BASE + "/hangup?" + query))
    assert reply.status_code == 200
    assert table.get_item(Key={"call_id": "job-1"})["Item"]["status"] == "completed"


def test_hangup_storage_failure_is_500_without_trace(client, s3, env):
    env.setenv("CALLS_TABLE", "no-such-table")
    resources.reset()
    reply = signed_post(client, "/hangup", HANGUP, query="call_id=job-1")
    assert reply.status_code == 500
    assert b"Traceback" not in reply.body and b"<Response/>" in reply.body

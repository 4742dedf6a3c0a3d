"""Launcher tests: DynamoDB through moto (the real table shape, GSI included), Plivo through the
simulator's real HTTP server, settings from the environment like in Lambda."""

from __future__ import annotations

import threading
import time

import boto3
import pytest
from moto import mock_aws
from moto.core.botocore_stubber import BotocoreStubber

from chalicelib import resources
from chalicelib.jobs import JobRepository
from chalicelib.settings import Settings

TABLE = "callflow-calls-test"
AUTH_ID = "MAXXXXXXXXXXXXXXXXXX"
AUTH_TOKEN = "test-token-do-not-log"  # noqa: S105
BASE = "https://example.execute-api.us-east-1.amazonaws.com/api"

ENV = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "CALLS_TABLE": TABLE,
    "PLIVO_AUTH_ID": AUTH_ID,
    "PLIVO_AUTH_TOKEN": AUTH_TOKEN,
    "PUBLIC_BASE_URL": BASE,
    "PLIVO_CPS": "50",
    "CALL_WINDOW": "00:00-00:00",
    "DEFAULT_TZ": "UTC",
    "VERIFY_SIGNATURES": "false",
}


@pytest.fixture(autouse=True)
def env(monkeypatch):
    for name in ("PLIVO_AUTH_TOKEN_PARAM", "PLIVO_API_URL", "MAX_ATTEMPTS", "RETRY_DELAYS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    resources.reset()
    yield
    resources.reset()


@pytest.fixture
def atomic_moto(monkeypatch):
    """Real DynamoDB applies each conditional write atomically; moto does not lock, so concurrent
    claims could interleave inside moto. Serialise moto's request handling to model DynamoDB."""
    lock = threading.Lock()
    original = BotocoreStubber.process_request

    def locked(self, request):
        with lock:
            return original(self, request)

    monkeypatch.setattr(BotocoreStubber, "process_request", locked)


@pytest.fixture
def table(atomic_moto):
    with mock_aws():
        ddb = boto3.resource("dynamodb", region_name="us-east-1")
        created = ddb.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "call_id", "KeyType": "HASH"}],
            AttributeDefinitions=[
                {"AttributeName": "call_id", "AttributeType": "S"},
                {"AttributeName": "status", "AttributeType": "S"},
                {"AttributeName": "due_at", "AttributeType": "N"},
            ],
            GlobalSecondaryIndexes=[{
                "IndexName": "status-due_at-index",
                "KeySchema": [{"AttributeName": "status", "KeyType": "HASH"},
                              {"AttributeName": "due_at", "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "ALL"},
            }],
            BillingMode="PAY_PER_REQUEST",
        )
        yield created


@pytest.fixture
def repo(table):
    return JobRepository(table)


@pytest.fixture
def ddb_requests(table):
    """Every DynamoDB API call made through the table's client, by operation name."""
    seen: list[str] = []
    lock = threading.Lock()

    def count(event_name, **_):
        with lock:
            seen.append(event_name.rsplit(".", 1)[-1])

    table.meta.client.meta.events.register("before-call.dynamodb", count)
    yield seen
    table.meta.client.meta.events.unregister("before-call.dynamodb", count)


@pytest.fixture
def settings():
    return Settings.from_env()


@pytest.fixture
def sim():
    from devtools.plivo_sim import PlivoSimulator

    simulator = PlivoSimulator(AUTH_ID, AUTH_TOKEN, hold_seconds=5.0).start()
    yield simulator
    simulator.stop()


def make_job(call_id: str, due_at: float | None = None, **fields):
    job = {"call_id": call_id, "status": "pending", "due_at": time.time() - 5 if due_at is None else due_at,
           "to": "14155550100", "from": "14155559999", "headers": {"CustomerId": "C42", "Lang": "en"}}
    job.update(fields)
    return job

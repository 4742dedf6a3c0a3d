"""Launcher tests: DynamoDB through moto (the real table shape, GSI included), Plivo through the
simulator's real HTTP server, settings from the environment like in Lambda.

Helpers the test modules import live in `launcherlib.py` (a named module, so no test imports a conftest)."""

from __future__ import annotations

import threading

import boto3
import pytest
from moto import mock_aws

from chalicelib import resources
from chalicelib.calls.jobs import JobRepository
from chalicelib.settings import Settings
from tests import support
from tests.calls.launcherlib import AUTH_ID, AUTH_TOKEN, ENV, TABLE, UNSET


@pytest.fixture(autouse=True)
def env(monkeypatch):
    support.apply_env(monkeypatch, ENV, UNSET)
    resources.reset()
    yield
    resources.reset()


@pytest.fixture
def table(atomic_moto):
    """The calls table in moto, created from infra/resources.json (the deploy's shape, GSI included)."""
    with mock_aws():
        yield support.create_calls_table(boto3.resource("dynamodb", region_name="us-east-1"), TABLE)


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
def sim_account():
    return AUTH_ID, AUTH_TOKEN, 5.0

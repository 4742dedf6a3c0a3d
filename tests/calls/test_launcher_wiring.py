"""launch() with the live settings and resources, the Lambda handler, and the token from SSM."""

from __future__ import annotations

import logging

import boto3
import pytest
from moto import mock_aws

from chalicelib import resources
from chalicelib.handlers import launch
from chalicelib.resources import resolve_auth_token
from chalicelib.settings import ConfigError, Settings
from tests.calls.launcherlib import AUTH_TOKEN, make_job


def test_launch_uses_the_environment(repo, sim, monkeypatch):
    monkeypatch.setenv("PLIVO_API_URL", sim.url)
    resources.reset()
    repo.add(make_job("a"))
    assert launch()["placed"] == 1
    assert sim.calls[0]["body"]["hangup_url"].endswith("/api/hangup?call_id=a")


def test_scheduled_lambda_passes_its_remaining_time(repo, sim, monkeypatch):
    """Chalice's test context reports 3 s left: too little to dial safely, so nothing is claimed."""
    from chalice.test import Client

    from app import app

    monkeypatch.setenv("PLIVO_API_URL", sim.url)
    resources.reset()
    repo.add(make_job("a"))
    with Client(app) as client:
        event = client.events.generate_cw_event(
            source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
        )
        reply = client.lambda_.invoke("launch_calls", event)
    assert reply.payload == {"due": 0, "placed": 0, "deferred": 0, "failed": 0, "unknown": 0, "skipped": 0}
    assert repo.get("a")["status"] == "pending" and sim.requests == []


def test_token_from_ssm_is_read_once_and_never_logged(repo, sim, monkeypatch, caplog):
    with mock_aws():
        boto3.client("ssm", region_name="us-east-1").put_parameter(
            Name="/callflow/plivo-token", Value=AUTH_TOKEN, Type="SecureString"
        )
        monkeypatch.delenv("PLIVO_AUTH_TOKEN")
        monkeypatch.setenv("PLIVO_AUTH_TOKEN_PARAM", "/callflow/plivo-token")
        monkeypatch.setenv("PLIVO_API_URL", sim.url)
        resources.reset()
        calls = []
        original = resources.ssm_client.__wrapped__

        def counted():
            calls.append(1)
            return original()

        monkeypatch.setattr(resources.ssm_client, "__wrapped__", counted)
        assert resources.plivo_auth_token() == AUTH_TOKEN
        assert resources.plivo_auth_token() == AUTH_TOKEN
        repo.add(make_job("a"))
        caplog.set_level(logging.DEBUG)
        assert launch()["placed"] == 1
        assert calls == [1]
        assert AUTH_TOKEN not in caplog.text and AUTH_TOKEN not in repr(resources.plivo_client())


def test_missing_or_unreadable_token_is_a_clear_config_error():
    with pytest.raises(ConfigError, match="PLIVO_AUTH_TOKEN or PLIVO_AUTH_TOKEN_PARAM"):
        resolve_auth_token(Settings(), lambda: None)
    with mock_aws():
        ssm = boto3.client("ssm", region_name="us-east-1")
        with pytest.raises(ConfigError, match="'/missing'.*ParameterNotFound"):
            resolve_auth_token(Settings(plivo_auth_token_param="/missing"), lambda: ssm)


def test_the_dynamodb_client_keeps_a_connection_for_every_worker(monkeypatch):
    """botocore's default pool is 10: the launcher's 11th concurrent request would open a connection (a TLS
    handshake to DynamoDB) and throw it away after one request."""
    from chalicelib.calls import launcher as launcher_module

    assert resources.DYNAMODB_POOL == launcher_module.MAX_WORKERS
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    resources.reset()
    try:
        config = resources.dynamodb_resource().meta.client.meta.config
        assert config.max_pool_connections == launcher_module.MAX_WORKERS
    finally:
        resources.reset()

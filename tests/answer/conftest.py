"""Answer-service tests: S3 through moto, the app through chalice.test.Client, settings from the
environment like in Lambda, and plivo-python as the signature oracle.

Helpers the test modules import live in `answerlib.py` (a named module, so no test imports a conftest).
"""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from chalicelib import resources
from tests import support
from tests.answer.answerlib import BUCKET, ENV, PREFIX, ROOT, UNSET, S3Traffic


@pytest.fixture(autouse=True)
def env(monkeypatch):
    support.apply_env(monkeypatch, ENV, UNSET)
    resources.reset()
    yield monkeypatch
    resources.reset()


_SESSION: list[boto3.session.Session] = []


@pytest.fixture
def s3():
    """A moto S3 holding the sample templates/ directory of this repository."""
    with mock_aws():
        # moto clears boto3's default session; one shared session keeps client creation ~10 ms instead
        # of ~150 ms (service models stay loaded). The app's own clients come from it too.
        if not _SESSION:
            _SESSION.append(boto3.session.Session())
        boto3.DEFAULT_SESSION = _SESSION[0]
        client = _SESSION[0].client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        support.upload_templates(client, BUCKET, PREFIX)
        yield client


@pytest.fixture
def client(s3):
    from chalice.test import Client

    from app import app

    # A stage absent from .chalice/config.json: the tests own the environment, not the deploy config.
    with Client(app, stage_name="answer-tests", project_dir=str(ROOT)) as test_client:
        yield test_client


@pytest.fixture
def app_s3(s3):
    """The app's own S3 client (resources.s3_client), instrumented."""
    return S3Traffic(resources.s3_client())

"""Answer-service tests: S3 through moto, the app through chalice.test.Client, settings from the
environment like in Lambda, and plivo-python as the signature oracle."""

from __future__ import annotations

import pathlib
import sys
from urllib.parse import urlencode

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from moto import mock_aws

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from chalicelib import resources  # noqa: E402

BUCKET = "callflow-templates-test"
PREFIX = "templates/"
TOKEN = "answer-test-token"  # noqa: S105
BASE = "https://abc123.execute-api.us-east-1.amazonaws.com/api"

# The real answer URL query string from PLIVO.md (outbound call with sip_headers="Test=Sample").
PLIVO_QUERY = (
    "Direction=outbound&From=1111111111&ALegUUID=5260e820-958c-11e4-b6bf-498d468c930b&BillRate=0.00300"
    "&To=sip%3Aabcd150105094929%40phone.plivo.com&X-PH-Test=Sample"
    "&CallUUID=5260e820-958c-11e4-b6bf-498d468c930b&ALegRequestUUID=2202d0ab-a890-4199-8582-e7a2615cb23b"
    "&RequestUUID=2202d0ab-a890-4199-8582-e7a2615cb23b"
    "&SIP-H-To=%3Csip%3Aabcd150105094929%40phone.plivo.com%3E%3Btag%3D6U9J4.uVHI7KyEKSgD8vrPnAKQoR2QXc"
    "&CallStatus=in-progress&Event=StartApp"
)

ENV = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "TEMPLATE_BUCKET": BUCKET,
    "TEMPLATE_PREFIX": PREFIX,
    "PLIVO_AUTH_TOKEN": TOKEN,
    "PUBLIC_BASE_URL": BASE,
    "VERIFY_SIGNATURES": "true",
}
UNSET = ("PLIVO_AUTH_TOKEN_PARAM", "DEFAULT_TEMPLATE", "TEMPLATE_CACHE_TTL", "AWS_ENDPOINT_URL",
         "AWS_ENDPOINT_URL_S3", "AWS_PROFILE")


@pytest.fixture(autouse=True)
def env(monkeypatch):
    for name in UNSET:
        monkeypatch.delenv(name, raising=False)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
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
        for path in sorted((ROOT / "templates").iterdir()):
            client.put_object(Bucket=BUCKET, Key=PREFIX + path.name, Body=path.read_bytes())
        yield client


def put(client, name: str, body: str | bytes) -> None:
    client.put_object(Bucket=BUCKET, Key=PREFIX + name, Body=body)


@pytest.fixture
def client(s3):
    from chalice.test import Client

    from app import app

    # A stage absent from .chalice/config.json: the tests own the environment, not the deploy config.
    with Client(app, stage_name="answer-tests", project_dir=str(ROOT)) as test_client:
        yield test_client


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, *args, **kwargs):
        yield self.body


class S3Traffic:
    """Counts real S3 requests made by a boto3 client and can make them fail like a dead network."""

    def __init__(self, s3_client) -> None:
        self.calls: list[str] = []
        self.down = False
        self.error: tuple[int, str] | None = None  # (HTTP status, S3 error code) to answer instead of S3
        events = s3_client.meta.events
        events.register_first("before-send.s3", self._before_send)

    def _before_send(self, request, **kwargs):
        self.calls.append(f"{request.method} {request.url}")
        if self.down:
            raise EndpointConnectionError(endpoint_url=request.url)
        if self.error is not None:
            from botocore.awsrequest import AWSResponse

            status, code = self.error
            body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
            return AWSResponse(request.url, status, {"Content-Type": "application/xml"}, _Raw(body))
        return None

    def reset(self) -> None:
        self.calls.clear()


@pytest.fixture
def app_s3(s3):
    """The app's own S3 client (resources.s3_client), instrumented."""
    return S3Traffic(resources.s3_client())


# ---------------------------------------------------------------- signing with Plivo's algorithm

def plivo_sign(method: str, uri: str, params: dict, nonce: str, token: str = TOKEN) -> str:
    """Sign as Plivo does, using the SDK's own URL construction (plivo-python is the oracle)."""
    from plivo.utils.signature_v3 import construct_get_url, construct_post_url, get_signature_v3

    url = construct_get_url(uri, dict(params)) if method == "GET" else construct_post_url(uri, dict(params))
    return get_signature_v3(token.encode(), url.decode("utf-8"), nonce.encode()).decode()


def signed_headers(method: str, uri: str, params: dict | None = None, nonce: str = "31337") -> dict:
    signature = plivo_sign(method, uri, params or {}, nonce)
    return {"X-Plivo-Signature-V3": signature, "X-Plivo-Signature-V3-Nonce": nonce}


def form(params: dict) -> bytes:
    return urlencode(params, doseq=True).encode()

"""Shared pieces of the answer tests: their settings, S3 helpers and Plivo-style signing with the
answer tests' token (plivo-python is the oracle, via `tests.support`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from botocore.exceptions import EndpointConnectionError

from tests import support
from tests.support import PLIVO_QUERY, ROOT, form

__all__ = [
    "BASE",
    "BUCKET",
    "ENV",
    "PLIVO_QUERY",
    "PREFIX",
    "ROOT",
    "TOKEN",
    "UNSET",
    "S3Traffic",
    "form",
    "plivo_sign",
    "put",
    "signed_headers",
]

BUCKET = "callflow-templates-test"
PREFIX = "templates/"
TOKEN = "answer-test-token"
BASE = "https://abc123.execute-api.us-east-1.amazonaws.com/api"

ENV = {
    "TEMPLATE_BUCKET": BUCKET,
    "TEMPLATE_PREFIX": PREFIX,
    "PLIVO_AUTH_TOKEN": TOKEN,
    "PUBLIC_BASE_URL": BASE,
    "VERIFY_SIGNATURES": "true",
    # Pinned: reading the settings sets the logger's level from LOG_LEVEL, over any caplog.set_level, so a
    # test that counts ERROR lines must not depend on the shell's (or an earlier test's) LOG_LEVEL.
    "LOG_LEVEL": "INFO",
}
UNSET = (
    "PLIVO_AUTH_TOKEN_PARAM",
    "DEFAULT_TEMPLATE",
    "TEMPLATE_CACHE_TTL",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_PROFILE",
)


def put(client, name: str, body: str | bytes) -> None:
    client.put_object(Bucket=BUCKET, Key=PREFIX + name, Body=body)


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


def plivo_sign(method: str, uri: str, params: Mapping[str, Any], nonce: str, token: str = TOKEN) -> str:
    return support.plivo_sign(method, uri, params, nonce, token)


def signed_headers(
    method: str, uri: str, params: Mapping[str, Any] | None = None, nonce: str = "31337"
) -> dict[str, str]:
    return support.signed_headers(method, uri, params, nonce, TOKEN)

"""Helpers shared by the test directories (a named module, so no test imports a conftest).

One source of truth per concern: the calls table's shape comes from infra/resources.json through the
local stack's own translator (`devtools.local_aws`), the fake AWS environment from there too, API Gateway
events and V3 signatures from `devtools.events`, each signature checked by plivo-python's
`validate_v3_signature` (the oracle) before a test sends it.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from devtools import events, local_aws

ROOT = Path(__file__).resolve().parents[1]
REGION = local_aws.REGION

# Dummy credentials for moto; every test environment starts from these.
AWS_ENV = local_aws.aws_env()

# The real answer URL query string from PLIVO.md (outbound call made with sip_headers="Test=Sample").
PLIVO_QUERY = (
    "Direction=outbound&From=1111111111&ALegUUID=5260e820-958c-11e4-b6bf-498d468c930b&BillRate=0.00300"
    "&To=sip%3Aabcd150105094929%40phone.plivo.com&X-PH-Test=Sample"
    "&CallUUID=5260e820-958c-11e4-b6bf-498d468c930b&ALegRequestUUID=2202d0ab-a890-4199-8582-e7a2615cb23b"
    "&RequestUUID=2202d0ab-a890-4199-8582-e7a2615cb23b"
    "&SIP-H-To=%3Csip%3Aabcd150105094929%40phone.plivo.com%3E%3Btag%3D6U9J4.uVHI7KyEKSgD8vrPnAKQoR2QXc"
    "&CallStatus=in-progress&Event=StartApp"
)


# ---------------------------------------------------------------- environment


def apply_env(mp, values: Mapping[str, str], unset: Iterable[str] = ()) -> None:
    """Lambda-like environment through pytest's monkeypatch: `unset` removed, AWS_ENV + `values` set."""
    for name in unset:
        mp.delenv(name, raising=False)
    for name, value in {**AWS_ENV, **values}.items():
        mp.setenv(name, value)


# ---------------------------------------------------------------- moto


def serialise_moto(mp) -> None:
    """Real DynamoDB applies each conditional write atomically; in-process moto does not lock, so
    concurrent claims could interleave inside moto. Serialise moto's request handling to model DynamoDB
    (moto is the stand-in for AWS here, not our code)."""
    from moto.core.botocore_stubber import BotocoreStubber

    lock = threading.Lock()
    original = BotocoreStubber.process_request

    def locked(self, request):
        with lock:
            return original(self, request)

    mp.setattr(BotocoreStubber, "process_request", locked)


def calls_table_args(table: str) -> dict[str, Any]:
    """create_table arguments from infra/resources.json's CallsTable: the deploy's shape, GSI included."""
    from devtools.local_aws import cfn_resource, create_table_args

    return create_table_args(cfn_resource("CallsTable"), table)


def create_calls_table(dynamodb_resource, table: str):
    """The calls table, shaped like the deploy's, on a boto3 DynamoDB resource; returns the Table."""
    return dynamodb_resource.create_table(**calls_table_args(table))


def upload_templates(s3_client, bucket: str, prefix: str) -> None:
    """This repository's sample templates/ directory, as the deploy would push it."""
    for path in sorted((ROOT / "templates").iterdir()):
        s3_client.put_object(Bucket=bucket, Key=prefix + path.name, Body=path.read_bytes())


def make_job(call_id: str, due_at: float | None = None, **fields) -> dict[str, Any]:
    """A pending call job (SPEC "Call jobs"), due 5 s ago unless `due_at` says otherwise."""
    job = {
        "call_id": call_id,
        "status": "pending",
        "due_at": time.time() - 5 if due_at is None else due_at,
        "to": "14155550100",
        "from": "14155559999",
        "headers": {"CustomerId": "C42", "Lang": "en"},
    }
    job.update(fields)
    return job


# ---------------------------------------------------------------- Plivo V3 signatures (plivo-python)


def plivo_sign(method: str, uri: str, params: Mapping[str, Any], nonce: str, token: str) -> str:
    """Sign as Plivo does: devtools.events' signer, and plivo-python's validate_v3_signature (the oracle)
    must accept the result, so a test never sends a signature Plivo would not have made."""
    from plivo.utils.signature_v3 import validate_v3_signature

    signature = events.sign_v3(token, method, uri, params, nonce)
    assert validate_v3_signature(method.upper(), uri, nonce, token, signature, dict(params)), (
        "devtools.events.sign_v3 disagrees with plivo-python"
    )
    return signature


def signed_headers(
    method: str, uri: str, params: Mapping[str, Any] | None, nonce: str, token: str
) -> dict[str, str]:
    return {
        "X-Plivo-Signature-V3": plivo_sign(method, uri, params or {}, nonce, token),
        "X-Plivo-Signature-V3-Nonce": nonce,
    }


def form(params: Mapping[str, Any]) -> bytes:
    return urlencode(params, doseq=True).encode()


# The settings callflow reads (SPEC's table).
SPEC_SETTINGS = {
    "TEMPLATE_BUCKET",
    "TEMPLATE_PREFIX",
    "TEMPLATE_CACHE_TTL",
    "DEFAULT_TEMPLATE",
    "CALLS_TABLE",
    "PLIVO_AUTH_ID",
    "PLIVO_AUTH_TOKEN",
    "PLIVO_AUTH_TOKEN_PARAM",
    "PLIVO_API_URL",
    "PUBLIC_BASE_URL",
    "VERIFY_SIGNATURES",
    "PLIVO_CPS",
    "MAX_ATTEMPTS",
    "RETRY_DELAYS",
    "CALL_WINDOW",
    "DEFAULT_TZ",
    "LOG_LEVEL",
    "EVENT_BUS",
}
# SPEC: "v2 adds whatever settings campaigns, the do-not-call list and metrics need: each is documented in the
# README's table". These are those (the README's settings table names them).
README_V2_SETTINGS = {"CAMPAIGNS_TABLE"}
SETTINGS = SPEC_SETTINGS | README_V2_SETTINGS


# ---------------------------------------------------------------- a stand-in for the Call API


@contextlib.contextmanager
def call_api_server(
    on_post: Callable[[BaseHTTPRequestHandler, bytes], None], context: ssl.SSLContext | None = None
) -> Iterator[str]:
    """A local HTTP(S) server, serving while the block runs, that answers every POST as Plivo's Call API
    accepts a call and hands each request (its handler and raw body) to `on_post`; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            on_post(self, self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            reply = json.dumps({"message": "call fired", "request_uuid": "r-1", "api_id": "a-1"}).encode()
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"{'https' if context else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()

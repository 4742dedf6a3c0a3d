"""Shared pieces of the fault tests: environment, the AWS stack, Plivo-style signing (plivo-python is the
oracle), API Gateway proxy events, botocore fault hooks, and readers for logs, XML and simulator calls."""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlparse

from chalicelib.logs import SERVICE
from devtools import events
from tests import support
from tests.support import PLIVO_QUERY, ROOT, form, make_job  # noqa: F401 - the fault tests import them here

REGION = support.REGION
BUCKET = "callflow-faults-templates"
PREFIX = "templates/"
TABLE = "callflow-faults-calls"
AUTH_ID = "MAFAULTSXXXXXXXXXXXX"
TOKEN = "faults-test-token"
DOMAIN = "fault123.execute-api.us-east-1.amazonaws.com"
BASE = f"https://{DOMAIN}/api"

ENV = {
    "TEMPLATE_BUCKET": BUCKET,
    "TEMPLATE_PREFIX": PREFIX,
    "CALLS_TABLE": TABLE,
    "PLIVO_AUTH_ID": AUTH_ID,
    "PLIVO_AUTH_TOKEN": TOKEN,
    "PUBLIC_BASE_URL": BASE,
    "VERIFY_SIGNATURES": "true",
    "PLIVO_CPS": "50",
    "CALL_WINDOW": "00:00-00:00",
    "DEFAULT_TZ": "UTC",
}
UNSET = (
    "PLIVO_AUTH_TOKEN_PARAM",
    "DEFAULT_TEMPLATE",
    "TEMPLATE_CACHE_TTL",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_PROFILE",
    "PLIVO_API_URL",
    "MAX_ATTEMPTS",
    "RETRY_DELAYS",
    "LOG_LEVEL",
)


def apply_env(mp, extra: Mapping[str, str] | None = None) -> None:
    support.apply_env(mp, {**ENV, **(extra or {})}, UNSET)


# ---------------------------------------------------------------- the AWS stack (inside mock_aws or a server)


def table_args() -> dict[str, Any]:
    """create_table arguments from infra/resources.json's CallsTable: the deploy's shape, GSI included."""
    return support.calls_table_args(TABLE)


def create_stack(endpoint_url: str | None = None, templates: bool = True):
    """Bucket with the sample templates, and the calls table. Returns the admin boto3 Session."""
    import boto3

    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    s3 = session.client("s3", endpoint_url=endpoint_url)
    s3.create_bucket(Bucket=BUCKET)
    if templates:
        support.upload_templates(s3, BUCKET, PREFIX)
    support.create_calls_table(session.resource("dynamodb", endpoint_url=endpoint_url), TABLE)
    return session


def put_template(session, name: str, body: str | bytes, endpoint_url: str | None = None) -> None:
    session.client("s3", endpoint_url=endpoint_url).put_object(Bucket=BUCKET, Key=PREFIX + name, Body=body)


# ---------------------------------------------------------------- Plivo V3 signatures (plivo-python)


def plivo_sign(method: str, uri: str, params: Mapping[str, Any], nonce: str, token: str = TOKEN) -> str:
    return support.plivo_sign(method, uri, params, nonce, token)


def plivo_sign_parts(
    method: str,
    base_uri: str,
    query: Mapping[str, list[str]],
    body: Mapping[str, Any],
    nonce: str,
    token: str = TOKEN,
) -> str:
    """Like plivo_sign, for a URL given as its decoded query. plivo-python parses a URL's query as ASCII
    bytes, so it cannot check a URL whose query decodes to non-ASCII text; the oracle is then the SDK's
    own sorting functions on the decoded parameters (PLIVO.md steps 2 and 3), which must agree with
    devtools.events' signer."""
    from plivo.utils.signature_v3 import (
        construct_get_url,
        construct_post_url,
        get_signature_v3,
        get_sorted_params_string,
        get_sorted_query_string,
    )

    query = {key: list(values) for key, values in query.items()}
    if method.upper() == "GET":
        url = construct_get_url(base_uri, query).decode("utf-8")
    elif not query:
        url = construct_post_url(base_uri, dict(body)).decode("utf-8")
    elif not body:
        url = construct_get_url(base_uri, query).decode("utf-8")
    else:
        url = f"{base_uri}?{get_sorted_query_string(query)}.{get_sorted_params_string(dict(body))}"
    oracle = get_signature_v3(token.encode(), url, nonce.encode()).decode()
    signed = events.sign_v3(token, method, base_uri, {} if method.upper() == "GET" else body, nonce, query)
    assert signed == oracle, "devtools.events.sign_v3 disagrees with plivo-python"
    return signed


def signed_headers(
    method: str, uri: str, params: Mapping[str, Any] | None = None, nonce: str = "424242"
) -> dict[str, str]:
    return support.signed_headers(method, uri, params, nonce, TOKEN)


def query_dict(query: str) -> dict[str, list[str]]:
    return parse_qs(query, keep_blank_values=True)


# ---------------------------------------------------------------- API Gateway proxy events


def api_event(
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    query: Mapping[str, list[str]] | None = None,
    body: bytes | str | None = None,
    base64_body: bool = False,
) -> dict[str, Any]:
    """A REST API (v1) Lambda proxy event as API Gateway sends it for `https://DOMAIN/api{path}`."""
    from devtools.events import proxy_event

    all_headers = {
        "Host": DOMAIN,
        "User-Agent": "PlivoHTTP/1.0",
        "X-Forwarded-Proto": "https",
        **(headers or {}),
    }
    if isinstance(body, bytes):
        body = base64.b64encode(body).decode() if base64_body else body.decode("utf-8")
    return proxy_event(
        method, path, domain=DOMAIN, headers=all_headers, query=query, body=body, is_base64=base64_body
    )


def invoke(event: Mapping[str, Any]) -> dict[str, Any]:
    """The deployed handler itself: Chalice's `app(event, context)`, as Lambda calls it."""
    from app import app

    return app(dict(event), None)


def signed_hangup_event(call_id: str, params: Mapping[str, str], nonce: str = "777") -> dict[str, Any]:
    """Plivo's POST to the hangup_url the launcher gave it, signed with the account token."""
    query = {"call_id": [call_id]}
    signature = plivo_sign_parts("POST", f"{BASE}/hangup", query, params, nonce)
    headers = {
        "X-Plivo-Signature-V3": signature,
        "X-Plivo-Signature-V3-Nonce": nonce,
        "Content-Type": "application/x-www-form-urlencoded",
    }
    return api_event("POST", "/hangup", headers=headers, query=query, body=form(params))


# ---------------------------------------------------------------- XML


def xml_tree(body: str):
    import defusedxml.ElementTree as DET

    return DET.fromstring(body.encode("utf-8"))


def verbs(body: str) -> list[str]:
    return [child.tag for child in xml_tree(body)]


def all_tags(body: str) -> list[str]:
    return [element.tag for element in xml_tree(body).iter()]


def spoken(body: str) -> list[str]:
    return [" ".join("".join(e.itertext()).split()) for e in xml_tree(body).iter("Speak")]


# ---------------------------------------------------------------- botocore fault hooks on the app's clients


class _Raw:
    """The urllib3-like body botocore reads from an AWSResponse."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any):
        yield self._body

    def read(self, *_: Any) -> bytes:
        return self._body


def aws_error_response(url: str, status: int, body: bytes, content_type: str):
    from botocore.awsrequest import AWSResponse

    headers = {
        "Content-Type": content_type,
        "Content-Length": str(len(body)),
        "x-amzn-RequestId": "fault-injected",
        "x-amz-request-id": "fault-injected",
    }
    return AWSResponse(url, status, headers, _Raw(body))


def s3_error(url: str, status: int, code: str, message: str = "injected fault"):
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
        f"<RequestId>fault</RequestId></Error>"
    ).encode()
    return aws_error_response(url, status, body, "application/xml")


def dynamodb_error(url: str, status: int, code: str, message: str = "injected fault"):
    body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message}).encode()
    return aws_error_response(url, status, body, "application/x-amz-json-1.0")


class _Sent:
    """The request as the fault sees it (its original URL)."""

    def __init__(self, request, url: str) -> None:
        self.request = request
        self.url = url
        self.body = request.body
        self.method = request.method


class FaultHook:
    """A `before-send` hook on one real boto3 client: for requests that `match`, `fault(request)` returns
    an AWSResponse or raises a botocore exception, instead of the request reaching AWS (moto).

    `times`: how many matching requests fail (None: all). Counts what it saw, by operation."""

    def __init__(
        self,
        client,
        event: str,
        fault: Callable[[Any], Any],
        match: Callable[[Any, dict], bool] | None = None,
        times: int | None = None,
    ) -> None:
        self.client = client
        self.event = event
        self.fault = fault
        self.match = match or (lambda request, body: True)
        self.remaining = times
        self.injected: list[dict] = []
        self.passed: list[dict] = []
        self._lock = threading.Lock()
        self.active = True
        client.meta.events.register_first(event, self._before_send)

    def _before_send(self, request, **_: Any):
        body = _json_body(request)
        with self._lock:
            if not (self.active and self.match(request, body)):
                self.passed.append(body)
                return None
            if self.remaining is not None:
                if self.remaining <= 0:
                    self.passed.append(body)
                    return None
                self.remaining -= 1
            self.injected.append(body)
        url = request.url
        # botocore emits before-send to every handler and uses the first response; in-process moto is a
        # later handler and would still apply the request. Point it at a host moto does not serve, so a
        # refused request really is refused.
        request.url = "https://fault-injected.invalid/"
        return self.fault(_Sent(request, url))

    def remove(self) -> None:
        self.active = False
        self.client.meta.events.unregister(self.event, self._before_send)


def _json_body(request) -> dict:
    raw = request.body
    if not raw:
        return {}
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return {}
    try:
        data = json.loads(raw)
    except (TypeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def key_of(body: dict) -> str | None:
    """The call_id a DynamoDB request acts on (UpdateItem/GetItem), from its JSON body."""
    return (body.get("Key") or {}).get("call_id", {}).get("S")


def is_claim(body: dict) -> bool:
    return ":pending" in body.get("ConditionExpression", "") and "ADD attempts" in body.get(
        "UpdateExpression", ""
    )


def is_result_write(body: dict) -> bool:
    """The launcher's write after Plivo answered (placed, or released to pending/failed/unknown)."""
    return "#s = :dialing" in body.get("ConditionExpression", "") and not is_claim(body)


def is_pending_query(body: dict) -> bool:
    values = body.get("ExpressionAttributeValues") or {}
    return body.get("IndexName") == "status-due_at-index" and {"S": "pending"} in values.values()


# ---------------------------------------------------------------- logs and the simulator


class LogReader(logging.Handler):
    """Collects the callflow logger's records formatted by the app's own JSON formatter."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        from chalicelib import logs

        self.setFormatter(logs.log.registered_formatter)  # the app's own Powertools formatter
        self.lines: list[dict] = []
        self._lock2 = threading.Lock()
        logger = logging.getLogger(SERVICE)
        self._level = logger.level
        logger.addHandler(self)
        logger.setLevel(logging.INFO)

    def emit(self, record: logging.LogRecord) -> None:
        line = json.loads(self.format(record))
        with self._lock2:
            self.lines.append(line)

    def at(self, level: str) -> list[dict]:
        return [line for line in self.lines if line["level"] == level]

    def close(self) -> None:
        logger = logging.getLogger(SERVICE)
        logger.removeHandler(self)
        logger.setLevel(self._level)
        super().close()


def call_id_of(call: Mapping[str, Any]) -> str:
    """Which job a simulator call was placed for: the call_id in the hangup_url the launcher sent."""
    return parse_qs(urlparse(call["body"]["hangup_url"]).query)["call_id"][0]


def dialled(calls: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for call in calls:
        counts[call_id_of(call)] = counts.get(call_id_of(call), 0) + 1
    return counts

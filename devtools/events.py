"""The one API Gateway / Lambda event builder and the one Plivo V3 signer for tests, bench and the
simulator's client side.

The signer calls the product's `chalicelib.signature` (no second copy of the algorithm). It is checked
against the independent oracle, plivo-python's `validate_v3_signature`, in tests/answer, tests/bench and
tests/e2e (the simulator's requests), so a request signed here is one Plivo would have signed.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

DEFAULT_DOMAIN = "abc123.execute-api.us-east-1.amazonaws.com"


# ---------------------------------------------------------------- Plivo V3 signatures


def sign_v3(
    token: str,
    method: str,
    url: str,
    params: Mapping[str, Any],
    nonce: str,
    query: Mapping[str, list[str]] | None = None,
) -> str:
    """X-Plivo-Signature-V3 of a request to `url` (its query included) with `params` (the query for a
    GET, the form body for a POST); `query` adds decoded query parameters to the URL's own."""
    from chalicelib import signature

    parsed = urllib.parse.urlsplit(url)
    base = f"{parsed.scheme}://{parsed.netloc}{parsed.path}"
    url_query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
    for key, values in (query or {}).items():
        url_query.setdefault(key, []).extend(values)
    # one value or a list of them; a JSON body's nested object stays a mapping (signed recursively)
    values = {k: v if isinstance(v, (list, Mapping)) else [v] for k, v in params.items()}
    if method.upper() == "GET":
        return signature.compute(token, base, nonce, {**values, **url_query})  # the URL's value wins
    return signature.compute(token, base, nonce, url_query, values)


def signed_headers(
    token: str,
    method: str,
    url: str,
    params: Mapping[str, Any] | None,
    nonce: str,
    query: Mapping[str, list[str]] | None = None,
) -> dict[str, str]:
    """The two headers Plivo adds to a signed request."""
    return {
        "X-Plivo-Signature-V3": sign_v3(token, method, url, params or {}, nonce, query),
        "X-Plivo-Signature-V3-Nonce": nonce,
    }


# ---------------------------------------------------------------- Plivo's answer parameters


def plivo_params(
    seq: int, template: str | None = None, extra: Mapping[str, str] | None = None, auth_id: str = ""
) -> dict[str, str]:
    """The parameters Plivo POSTs to an answer URL for an outbound call (PLIVO.md), numbered by `seq`."""
    uuid = f"5260e820-958c-11e4-{seq % 10000:04d}-498d468c{seq % 0xFFFF:04x}"
    params = {
        "Direction": "outbound",
        "From": "1111111111",
        "ALegUUID": uuid,
        "BillRate": "0.00300",
        "To": "sip:abcd150105094929@phone.plivo.com",
        "CallUUID": uuid,
        "ALegRequestUUID": "2202d0ab-a890-4199-8582-e7a2615cb23b",
        "RequestUUID": "2202d0ab-a890-4199-8582-e7a2615cb23b",
        "SIP-H-To": "<sip:abcd150105094929@phone.plivo.com>;tag=6U9J4.uVHI7KyEKSgD8vrPnAKQoR2QXc",
        "CallStatus": "in-progress",
        "Event": "StartApp",
        "SessionStart": "2026-11-26 10:00:00.000000",
        "ParentAuthID": auth_id,
        "CallerName": "Bench",
        "X-PH-CustomerName": f"Customer{seq % 997}",
        "X-PH-Balance": str(seq % 1000),
    }
    if template:
        params["X-PH-Template"] = template
    if extra:
        params.update(extra)
    return params


# ---------------------------------------------------------------- API Gateway events


def proxy_event(
    method: str,
    path: str,
    *,
    domain: str = DEFAULT_DOMAIN,
    headers: Mapping[str, str],
    query: Mapping[str, list[str]] | None = None,
    body: str | None = None,
    is_base64: bool = False,
    request_id: str = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
    source_ip: str = "18.215.140.21",
    stage: str = "api",
) -> dict:
    """An API Gateway REST (v1) Lambda proxy event for `https://{domain}/{stage}{path}` (the bench's and
    the tests' one builder). `query` is multi-valued, as API Gateway parses a query string."""
    api_id = domain.split(".", 1)[0]
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": dict(headers),
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} if query else None,
        "multiValueQueryStringParameters": {k: list(v) for k, v in query.items()} if query else None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "abc1de",
            "resourcePath": path,
            "httpMethod": method,
            "path": f"/{stage}{path}",
            "stage": stage,
            "domainName": domain,
            "domainPrefix": api_id,
            "apiId": api_id,
            "accountId": "123456789012",
            "requestId": request_id,
            "requestTimeEpoch": 1795687200000,
            "identity": {"sourceIp": source_ip, "userAgent": headers.get("User-Agent", "")},
            "protocol": "HTTP/1.1",
        },
        "body": body,
        "isBase64Encoded": is_base64,
    }


def plivo_event(
    params: Mapping[str, str],
    *,
    base_url: str,
    token: str,
    path: str = "/answer",
    method: str = "POST",
    seq: int = 0,
    signed: bool = True,
) -> dict:
    """The proxy event Lambda receives for Plivo's `method path` request (signed V3 with `token` for
    `base_url + path` unless `signed` is False)."""
    domain = urllib.parse.urlsplit(base_url).netloc
    body = urllib.parse.urlencode(params) if method == "POST" else None
    query = None if method == "POST" else {k: [v] for k, v in params.items()}
    headers = {
        "Host": domain,
        "User-Agent": "PlivoHTTP/1.0",
        "Accept": "*/*",
        "X-Forwarded-For": "52.9.254.127",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Port": "443",
    }
    if method == "POST":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    if signed:
        nonce = f"{seq:020d}"
        headers["X-Plivo-Signature-V3-Nonce"] = nonce
        headers["X-Plivo-Signature-V3"] = sign_v3(token, method, base_url + path, params, nonce)
    return proxy_event(
        method,
        path,
        domain=domain,
        headers=headers,
        query=query,
        body=body,
        request_id=f"req-{seq}",
        source_ip="52.9.254.127",
    )


class LambdaContext:
    """Just enough of the Lambda context object for Chalice and the handlers."""

    function_name = "callflow-dev"
    function_version = "$LATEST"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:callflow-dev"
    aws_request_id = "bench"
    log_group_name = "/aws/lambda/callflow-dev"
    log_stream_name = "bench"

    def __init__(self, budget_ms: int = 900_000) -> None:
        self._deadline = time.monotonic() + budget_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

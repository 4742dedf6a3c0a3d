"""HTTP layer of Plivo's callbacks (/answer and /hangup): parse parameters, rebuild the URL, check the V3
signature, and always answer with XML. Nothing here may let an exception reach Plivo as a 5xx trace.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from chalice import Response

from chalicelib import logs, resources, signature
from chalicelib.logs import log
from chalicelib.settings import ConfigError, Settings

XML = {"Content-Type": "application/xml"}
EMPTY_RESPONSE = '<?xml version="1.0" encoding="UTF-8"?>\n<Response/>\n'
MAX_BODY_BYTES = 256 * 1024  # Plivo's parameters are a few hundred bytes; anything this big is not Plivo
MAX_FIELDS = 1000


@dataclass(frozen=True)
class Callback:
    """A callback's parameters: as signed (query and body separately) and flattened for templates."""

    query: Mapping[str, list[str]]
    body: Mapping[str, Any] | None  # None when the body could not be parsed
    params: dict[str, str]  # body first, then the URL's query for names the body does not have
    body_error: str | None = None


def _first(value: Any) -> str:
    if isinstance(value, list):
        value = value[0] if value else ""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return "" if value is None else str(value)


def _body_params(request: Any) -> tuple[Mapping[str, Any] | None, str | None]:
    try:
        raw = request.raw_body
    except Exception:  # noqa: BLE001 - e.g. a body flagged base64 that is not
        return None, "body is not decodable"
    if not raw:
        return {}, None
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "replace")
    if len(raw) > MAX_BODY_BYTES:
        return None, f"body is over {MAX_BODY_BYTES} bytes"
    content_type = (request.headers.get("content-type") or "").lower()
    if "json" in content_type or (not content_type and raw[:1] == b"{"):
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if isinstance(data, dict):
            return data, None
        if "json" in content_type:
            return None, "body is not a JSON object"
    if raw.count(b"&") >= MAX_FIELDS:
        return None, f"body has more than {MAX_FIELDS} fields"
    return parse_form(raw.decode("utf-8", "replace")), None


def parse_form(text: str) -> dict[str, list[str]]:
    """application/x-www-form-urlencoded -> name: values, exactly as parse_qsl(keep_blank_values=True)
    decodes it, but without decoding the fields that need none (most of Plivo's)."""
    multi: dict[str, list[str]] = {}
    for field in text.split("&"):
        if not field:
            continue
        key, _, value = field.partition("=")
        if "%" in key or "+" in key:
            key = unquote_plus(key)
        if "%" in value or "+" in value:
            value = unquote_plus(value)
        values = multi.get(key)
        if values is None:
            multi[key] = [value]
        else:
            values.append(value)
    return multi


def parse(request: Any) -> Callback:
    """Plivo's parameters from the query string (GET) or a form/JSON body (POST) plus the query."""
    event = request.to_original_event()
    query = event.get("multiValueQueryStringParameters")
    if not query:
        single = event.get("queryStringParameters")
        query = {key: [value] for key, value in single.items()} if single else {}
    body: Mapping[str, Any] | None = {}
    error = None
    if request.method == "POST":
        body, error = _body_params(request)
    params = {key: _first(value) for key, value in body.items()} if body else {}
    for key, values in query.items():
        if key not in params:
            params[key] = values[0] if values else ""
    return Callback(query, body, params, error)


def request_url(request: Any, settings: Settings) -> str | None:
    """The URL Plivo called, without query: PUBLIC_BASE_URL + route, else API Gateway's or the Host's."""
    context = request.context or {}
    path = context.get("path") or request.path
    if settings.public_base_url:
        route = request.path
        if path.endswith("/") and not route.endswith("/"):
            route += "/"
        return settings.public_base_url + route
    domain = context.get("domainName")
    if domain:
        return f"https://{domain}{path}"
    host = request.headers.get("host")
    if host:
        return f"http://{host}{path}"
    return None


def signature_problem(request: Any, settings: Settings, callback: Callback) -> str | None:
    """Why this request is not signed by Plivo, or None when it is (or checks are off)."""
    if not settings.verify_signatures:
        return None
    headers = request.headers
    signatures = (headers.get("x-plivo-signature-v3"), headers.get("x-plivo-signature-ma-v3"))
    nonce = headers.get("x-plivo-signature-v3-nonce")
    if not (signatures[0] or signatures[1]) or nonce is None:
        return "missing X-Plivo-Signature-V3 or its nonce"
    if callback.body is None:
        return f"cannot check the signature: {callback.body_error}"
    url = request_url(request, settings)
    if url is None:
        return "cannot rebuild the request URL: set PUBLIC_BASE_URL"
    try:
        token = resources.plivo_auth_token()
    except ConfigError as exc:
        return f"cannot check the signature: {exc}"
    body = callback.body if request.method == "POST" else None
    if signature.verify(token, url, nonce, signatures, callback.query, body):
        return None
    return "signature does not match"


def _forbidden(request: Any, callback: Callback | None, reason: str) -> Response:
    # "cannot ..." means our configuration is wrong, not the caller: that needs an operator.
    emit = log.error if reason.startswith("cannot") else log.warning
    emit(
        "callback rejected",
        path=request.path,
        reason=reason,
        call_uuid=callback.params.get("CallUUID") if callback else None,
    )
    return Response(body="Forbidden\n", status_code=403, headers={"Content-Type": "text/plain"})


def _settings() -> Settings | None:
    try:
        return resources.settings()
    except ConfigError as exc:
        log.error("configuration error", cause=str(exc))
        return None


def _serve(
    request: Any,
    work: Callable[[Settings, Callback], Response],
    fallback: Callable[[], Response],
    failure: str,
) -> Response:
    """Check the signature, then `work`; whatever breaks becomes `fallback()` and one ERROR line."""
    callback = None
    try:
        settings = _settings()
        if settings is None:
            return fallback()
        callback = parse(request)
        problem = signature_problem(request, settings, callback)
        if problem is not None:
            return _forbidden(request, callback, problem)
        return work(settings, callback)
    except Exception as exc:  # noqa: BLE001 - logged; neither the caller nor Plivo gets a trace
        params = callback.params if callback else {}
        log.error(
            failure,
            call_id=params.get("call_id"),
            call_uuid=params.get("CallUUID"),
            cause=logs.cause(exc),
        )
        return fallback()


def _xml(body: str, status: int = 200) -> Response:
    return Response(body=body, status_code=status, headers=XML)


@logs.lambda_entry
def answer(request: Any, context: Any = None) -> Response:
    """GET|POST /answer: 403 for a bad signature, otherwise 200 with valid Plivo XML, always."""
    from chalicelib.answer import pipeline
    from chalicelib.answer.render import BUILTIN_FALLBACK

    def render(settings: Settings, callback: Callback) -> Response:
        try:
            store = resources.template_store()
        except ConfigError:
            store = None
        return _xml(pipeline.render_answer(store, settings, callback.params))

    return _serve(
        request, render, lambda: _xml(BUILTIN_FALLBACK), "answer failed; serving the built-in fallback"
    )


@logs.lambda_entry
def hangup(request: Any, context: Any = None) -> Response:
    """GET|POST /hangup?call_id=...: record the outcome, answer an empty <Response/>.

    A callback without call_id (a call callflow did not place) is acknowledged with 200 and a log line:
    Plivo can do nothing useful with an error. A failure to record answers 500 so Plivo's retry and the
    API's error metrics see it; recording is idempotent.
    """

    def record(settings: Settings, callback: Callback) -> Response:
        params = callback.params
        call_id = params.get("call_id")
        if not call_id:
            log.warning(
                "hangup callback without call_id; nothing to record",
                call_uuid=params.get("CallUUID"),
                call_status=params.get("CallStatus"),
            )
            return _xml(EMPTY_RESPONSE)
        from chalicelib.calls.hangup import record_hangup

        record_hangup(resources.job_repository(), settings, call_id, params, time.time())
        return _xml(EMPTY_RESPONSE)

    return _serve(request, record, lambda: _xml(EMPTY_RESPONSE, 500), "hangup callback not recorded")


@logs.lambda_entry
def launch_calls(event: Any, context: Any = None) -> dict[str, int]:
    """The scheduled Lambda: one launcher pass that stops in time for the Lambda's deadline."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return launch(remaining_ms=remaining)


def launch(remaining_ms: Callable[[], int] | None = None) -> dict[str, int]:
    """One launcher pass with the live settings: the scheduled Lambda's and `callflow launch`'s."""
    from chalicelib.calls.launcher import RUN_BUDGET_SECONDS, SUMMARY_KEYS, Launcher

    try:
        settings = resources.settings()
        launcher = Launcher(
            resources.job_repository(),
            resources.plivo_client(),
            settings,
            remaining_ms=remaining_ms,
            run_budget=RUN_BUDGET_SECONDS,
        )
    except ConfigError as exc:  # a setting typo: one ERROR, every job left pending for the fix
        log.error("launcher configuration error; no job touched", cause=str(exc))
        return dict.fromkeys(SUMMARY_KEYS, 0)
    except Exception as exc:
        log.error("launcher cannot start", cause=logs.cause(exc))
        raise
    return launcher.run()

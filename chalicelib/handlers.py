"""HTTP layer of Plivo's callbacks (/answer, /hangup and /machine): parse parameters, rebuild the URL,
check the V3 signature, and always answer with XML. Nothing here may let an exception reach Plivo as a
5xx trace.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple
from urllib.parse import unquote_plus

from chalice.app import Response

from chalicelib import logs, metrics, resources, signature
from chalicelib.logs import log
from chalicelib.settings import ConfigError, Settings

XML: dict[str, str | list[str]] = {"Content-Type": "application/xml"}
EMPTY_RESPONSE = '<?xml version="1.0" encoding="UTF-8"?>\n<Response/>\n'
TEXT: dict[str, str | list[str]] = {"Content-Type": "text/plain"}
MAX_BODY_BYTES = 256 * 1024  # Plivo's parameters are a few hundred bytes; anything this big is not Plivo
MAX_FIELDS = 1000


class Callback(NamedTuple):
    """A callback's parameters: as signed (query and body separately) and flattened for templates.
    (A NamedTuple, not a frozen dataclass: as immutable, and cheaper to build on every cold start.)"""

    query: Mapping[str, list[str]]
    body: Mapping[str, Any] | None  # None when the body could not be parsed
    params: dict[str, str]  # body first, then the URL's query for names the body does not have
    body_error: str | None = None


class OwnFault(Exception):
    """callflow cannot check a signature because of its own configuration (the token cannot be read):
    not the caller's fault, so not a 403."""


MAX_JSON_DEPTH = 16  # Plivo posts flat forms; a deeper body is not Plivo's (and recursion is not free)


def _first(value: Any) -> str:
    if isinstance(value, list):
        value = value[0] if value else ""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return "" if value is None else str(value)


def _json_shape_problem(data: Any) -> str | None:
    """Why a parsed JSON body is not one a callback could carry (too deep or too many values), without
    recursion: the depth check must not be the thing that overflows the stack."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    count = 0
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_FIELDS:
            return f"body has more than {MAX_FIELDS} values"
        if depth > MAX_JSON_DEPTH:
            return f"body is nested deeper than {MAX_JSON_DEPTH}"
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
    return None


def _body_params(request: Any) -> tuple[Mapping[str, Any] | None, str | None]:
    """The body's parameters, or (None, why not). Total: whatever the body holds, nothing is raised."""
    try:
        raw = request.raw_body
    except Exception:  # noqa: BLE001 - e.g. a body flagged base64 that is not
        return None, "body is not decodable"
    if not raw:
        return {}, None
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_BODY_BYTES:
        return None, f"body is over {MAX_BODY_BYTES} bytes"
    content_type = str(request.headers.get("content-type") or "").lower()
    if "json" in content_type or (not content_type and raw[:1] == b"{"):
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
            data = None
        if isinstance(data, dict):
            problem = _json_shape_problem(data)
            return (None, problem) if problem else (data, None)
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


def _query(request: Any) -> dict[str, list[str]]:
    """The URL's query parameters as API Gateway parsed them (name -> values)."""
    event = request.to_original_event()
    query = event.get("multiValueQueryStringParameters")
    if not query:
        single = event.get("queryStringParameters")
        return {str(key): [str(value)] for key, value in single.items()} if single else {}
    return {str(key): [str(v) for v in values or ()] for key, values in query.items()}


def parse(request: Any) -> Callback:
    """Plivo's parameters from the query string (GET) or a form/JSON body (POST) plus the query.

    Total: a body that cannot be parsed is reported in `body_error` (and `body` is None), never raised,
    because this runs on a stranger's bytes before the signature is known to be good.
    """
    try:
        query = _query(request)
    except Exception:  # noqa: BLE001 - API Gateway's own parse; a malformed event is not a callback
        return Callback({}, None, {}, "query is not readable")
    body: Mapping[str, Any] | None = {}
    error = None
    if request.method == "POST":
        try:
            body, error = _body_params(request)
        except Exception as exc:  # noqa: BLE001 - belt and braces: a hostile body is refused, not a fault
            body, error = None, f"body is not readable ({type(exc).__name__})"
    try:
        params = {str(key): _first(value) for key, value in body.items()} if body else {}
    except Exception as exc:  # noqa: BLE001 - e.g. a value json.dumps cannot write
        return Callback(query, None, {}, f"body is not readable ({type(exc).__name__})")
    for key, values in query.items():
        if key not in params:
            params[key] = values[0] if values else ""
    return Callback(query, body, params, error)


def request_url(request: Any, settings: Settings) -> str | None:
    """The URL Plivo called, without query: PUBLIC_BASE_URL + route, else API Gateway's, else the Host's.

    The Host header is a fallback for `chalice local` only (its events carry no `domainName`): the client
    chooses it, so a request signed for another host would verify when replayed with that Host. Whenever
    API Gateway's `requestContext.domainName` is there, even empty, Host is never used.
    """
    context = request.context or {}
    path: str = context.get("path") or request.path
    if settings.public_base_url:
        route: str = request.path
        if path.endswith("/") and not route.endswith("/"):
            route += "/"
        return settings.public_base_url + route
    if "domainName" in context:
        domain = context.get("domainName")
        return f"https://{domain}{path}" if domain else None
    host = request.headers.get("host")
    if host:
        return f"http://{host}{path}"
    return None


SIGNATURE_HEADER = "X-Plivo-Signature-V3"
MA_SIGNATURE_HEADER = "X-Plivo-Signature-Ma-V3"
NONCE_HEADER = "X-Plivo-Signature-V3-Nonce"


def missing_header(headers: Mapping[str, Any]) -> str | None:
    """Which signature header is missing, or None: checked first, before any of the body is read."""
    signed = headers.get(SIGNATURE_HEADER.lower()) or headers.get(MA_SIGNATURE_HEADER.lower())
    nonce = headers.get(NONCE_HEADER.lower())
    if not signed and nonce is None:
        return f"missing {SIGNATURE_HEADER} (or {MA_SIGNATURE_HEADER}) and {NONCE_HEADER}"
    if not signed:
        return f"missing {SIGNATURE_HEADER} (or {MA_SIGNATURE_HEADER})"
    if nonce is None:
        return f"missing {NONCE_HEADER}"
    return None


def signature_problem(request: Any, settings: Settings, callback: Callback) -> str | None:
    """Why this request is not signed by Plivo, or None when it is (or checks are off).

    Raises OwnFault when callflow cannot check because of its own configuration (the token).
    """
    if not settings.verify_signatures:
        return None
    headers = request.headers
    problem = missing_header(headers)
    if problem is not None:
        return problem
    if callback.body is None:
        return f"body cannot be checked: {callback.body_error}"
    url = request_url(request, settings)
    if url is None:
        return "no URL to check against (no domainName or Host; PUBLIC_BASE_URL sets it)"
    try:
        token = resources.plivo_auth_token()
    except ConfigError as exc:
        raise OwnFault(str(exc)) from None
    signatures = (headers.get("x-plivo-signature-v3"), headers.get("x-plivo-signature-ma-v3"))
    nonce = headers.get("x-plivo-signature-v3-nonce")
    body = callback.body if request.method == "POST" else None
    if signature.verify(token, url, nonce, signatures, callback.query, body):
        return None
    return "signature does not match"


def _forbidden(request: Any, callback: Callback | None, reason: str) -> Response:
    # Always the caller's doing (callflow's own faults are OwnFault): WARNING, never ERROR.
    metrics.count(metrics.SIGNATURE_REJECTIONS, Route=str(request.path).strip("/").rsplit("/", 1)[-1])
    log.warning(
        "callback rejected",
        path=request.path,
        reason=reason,
        call_uuid=callback.params.get("CallUUID") if callback else None,
    )
    return Response(body="Forbidden\n", status_code=403, headers=dict(TEXT))


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
    """Check the signature, then `work`; whatever breaks becomes `fallback()` and one ERROR line.

    A stranger's request reaches only total code before it is refused: the signature headers are looked
    at first, the body parse cannot raise, and the refusal is a WARNING. `fallback()` (with one ERROR)
    is for callflow's own faults: its settings, its token, its storage, its bugs.
    """
    callback = None
    try:
        settings = _settings()
        if settings is None:
            return fallback()
        if settings.verify_signatures:
            problem = missing_header(request.headers)
            if problem is not None:
                return _forbidden(request, None, problem)
        callback = parse(request)
        try:
            problem = signature_problem(request, settings, callback)
        except OwnFault as exc:
            log.error(
                "callback not checked: callflow cannot read its Plivo token",
                path=request.path,
                call_uuid=callback.params.get("CallUUID"),
                cause=str(exc),
            )
            return fallback()
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
    return Response(body=body, status_code=status, headers=dict(XML))


UNSUPPORTED: dict[str, str | list[str]] = {"Content-Type": "application/json"}


def rest_api_only(request: Any, get_response: Callable[[Any], Response]) -> Response:
    """HTTP middleware: the routes need API Gateway's REST API (Chalice's). An HTTP API (v2), ALB or
    Lambda Function URL event has no `requestContext.resourcePath`, so Chalice has no request to give
    (it would answer 500 with nothing logged): say so in the log, and answer a plain 500."""
    if request is not None:
        return get_response(request)
    log.error(
        "not an API Gateway REST API event: callflow's routes need API Gateway's REST API (Chalice's), "
        "not an HTTP API (v2), ALB or Function URL"
    )
    body = '{"Code":"UnsupportedEvent","Message":"this API needs API Gateway\'s REST API"}'
    return Response(body=body, status_code=500, headers=dict(UNSUPPORTED))


def _flush_metrics() -> None:
    """Once per invocation: the counts of this invocation as EMF lines (never the reply's problem)."""
    try:
        metrics.flush()
    except Exception as exc:  # noqa: BLE001 - a metric must not break a call
        log.error("cannot write metrics", cause=logs.cause(exc))


@logs.lambda_entry
def answer(request: Any, context: Any = None) -> Response:
    """GET|POST /answer: 403 for a bad or missing signature, otherwise 200 with valid Plivo XML, always.

    When callflow cannot check the signature because of its own configuration (the token cannot be read:
    SSM down, parameter missing), the call gets the built-in apology (200, no template rendered, so an
    unchecked request learns nothing) and one ERROR: a caller never hears silence, and a 403 or 500 would
    end the call without a word.

    A step of a conversation (`?step=Name&call_id=...`) is served like a first answer; what it carries
    and what its served reply asked for (`result()`, `optout()`) is recorded on the job afterwards
    (chalicelib.answer.conversation), and a failure to record still serves the reply.
    """
    try:
        return _answer(request)
    finally:
        _flush_metrics()


def _answer(request: Any) -> Response:
    from chalicelib.answer import pipeline
    from chalicelib.answer.conversation import Conversation
    from chalicelib.answer.render import BUILTIN_FALLBACK

    def render(settings: Settings, callback: Callback) -> Response:
        try:
            store = resources.template_store()
        except ConfigError:
            store = None
        conversation = Conversation(
            callback.params,
            base_url=lambda: request_url(request, settings),
            journal=resources.step_journal,
            dnc=resources.campaign_store,
        )
        reply = pipeline.answer(store, settings, callback.params, conversation.names)
        conversation.finish(reply)
        metrics.count(metrics.ANSWERS_SERVED)
        if reply.reason is not None:
            metrics.count(metrics.ANSWER_FALLBACKS, Reason=reply.reason)
        return _xml(reply.xml)

    def fallback() -> Response:
        metrics.count(metrics.ANSWERS_SERVED)
        metrics.count(metrics.ANSWER_FALLBACKS, Reason="error")
        return _xml(BUILTIN_FALLBACK)

    return _serve(request, render, fallback, "answer failed; serving the built-in fallback")


@logs.lambda_entry
def hangup(request: Any, context: Any = None) -> Response:
    """GET|POST /hangup?call_id=...: record the outcome, answer an empty <Response/>.

    A callback without call_id (a call callflow did not place) is acknowledged with 200 and a log line:
    Plivo can do nothing useful with an error. A failure to record, or to check the signature because of
    callflow's own configuration (the token cannot be read), answers 500 so Plivo retries and the API's
    error metrics see it; recording is idempotent. A bad or missing signature is 403.
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

        record_hangup(
            resources.job_repository(),
            settings,
            call_id,
            params,
            time.time(),
            campaigns=_campaigns(settings),
            publisher=resources.event_publisher(),
        )
        return _xml(EMPTY_RESPONSE)

    try:
        return _serve(request, record, lambda: _xml(EMPTY_RESPONSE, 500), "hangup callback not recorded")
    finally:
        _flush_metrics()


def _campaigns(settings: Settings) -> Callable[[str], Any] | None:
    """The campaign lookup for a callback (retry rules, machine detection), when campaigns are set up."""
    return resources.campaign_store().get if settings.campaigns_table else None


@logs.lambda_entry
def machine(request: Any, context: Any = None) -> Response:
    """GET|POST /machine?call_id=...: Plivo's machine detection (asynchronous). Records `machine=true` on
    the job's current attempt and, for `voicemail:<Template>`, transfers the live call to that step. Signed
    and answered like /hangup: an empty <Response/>, 500 when callflow could not record (Plivo may retry)."""

    def record(settings: Settings, callback: Callback) -> Response:
        params = callback.params
        call_id = params.get("call_id")
        if not call_id:
            log.warning(
                "machine callback without call_id; nothing to record", call_uuid=params.get("CallUUID")
            )
            return _xml(EMPTY_RESPONSE)
        from chalicelib.calls.machine import record_machine

        def base_url() -> str | None:
            url = request_url(request, settings)
            return url.rstrip("/").rsplit("/machine", 1)[0] if url else None

        record_machine(
            resources.job_repository(),
            call_id,
            params,
            time.time(),
            base_url=base_url,
            plivo=resources.plivo_client,
            campaigns=_campaigns(settings),
        )
        return _xml(EMPTY_RESPONSE)

    try:
        return _serve(request, record, lambda: _xml(EMPTY_RESPONSE, 500), "machine callback not recorded")
    finally:
        _flush_metrics()


@logs.lambda_entry
def launch_calls(event: Any, context: Any = None) -> dict[str, int]:
    """The scheduled Lambda: one launcher run that dials until shortly before the Lambda's deadline."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    try:
        return launch(remaining_ms=remaining)
    finally:
        _flush_metrics()


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
            # In Lambda the run dials until its own deadline (the lease hands over to the next run); by
            # hand, `callflow launch` dials for at most a scheduled run's minute.
            run_budget=None if remaining_ms is not None else RUN_BUDGET_SECONDS,
            campaigns=resources.campaign_store() if settings.campaigns_table else None,
            lease=resources.dialling_lease(),
            publisher=resources.event_publisher(),
        )
    except ConfigError as exc:  # a setting typo: one ERROR, every job left pending for the fix
        log.error("launcher configuration error; no job touched", cause=str(exc))
        metrics.count(metrics.LAUNCHER_ERRORS)
        return dict.fromkeys(SUMMARY_KEYS, 0)
    except Exception as exc:
        log.error("launcher cannot start", cause=logs.cause(exc))
        metrics.count(metrics.LAUNCHER_ERRORS)
        raise
    return launcher.run()

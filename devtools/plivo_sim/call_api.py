"""The simulator's Plivo REST Call API subset: Basic auth, the checks Plivo makes before it fires a call
(its own copy of the `sip_headers` rules, on purpose), Plivo's replies, and injected faults (scripted
replies per destination, random 429/5xx/timeouts, connection resets)."""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import select
import socket
import struct
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

CALL_PATH_RE = re.compile(r"^/v1/Account/(?P<account>[^/]+)/Call/?$")
CALL_ID_RE = re.compile(r"^/v1/Account/(?P<account>[^/]+)/Call/(?P<id>[^/]+)/?$")
REQUEST_ID_RE = re.compile(r"^/v1/Account/(?P<account>[^/]+)/Request/(?P<id>[^/]+)/?$")
MAX_LIST_LIMIT = 20
DEFAULT_SEARCH_DAYS = 7
MAX_SEARCH_DAYS = 30
HEADER_PART_RE = re.compile(r"^[A-Za-z0-9]+$")
DIGITS_RE = re.compile(r"^\+?[0-9]{2,20}$")
SIP_URI_RE = re.compile(r"^sips?:[^\s<>@]+@[^\s<>]+$")
MAX_HEADER_NAME = 24
MAX_HEADER_VALUE = 120
MAX_CALLER_NAME = 50
MAX_ANSWER_XML = 100 * 1024
SUCCESS = (200, 201, 202)
CALL_STATUSES = ("completed", "busy", "failed", "timeout", "no-answer", "cancel")

ERROR_TEXT = {
    401: "authentication failed",
    403: "permission denied for this destination",
    404: "not found",
    405: "method not allowed",
    429: "too many requests",
    500: "internal server error",
    502: "bad gateway",
    503: "service unavailable",
    504: "gateway timeout",
}


def _new_uuid() -> str:
    return str(uuid.uuid4())


def parse_sip_headers(raw: Any) -> tuple[dict[str, str], str | None]:
    """Plivo's `Name1=Value1,Name2=Value2` -> ({name: value}, None) or ({}, error)."""
    if raw is None or raw == "":
        return {}, None
    if not isinstance(raw, str):
        return {}, "sip_headers must be a string of the form key1=value1,key2=value2"
    headers: dict[str, str] = {}
    for pair in raw.split(","):
        name, sep, value = pair.partition("=")
        if not sep or "=" in value:
            return {}, f"sip_headers: {pair!r} is not of the form key=value"
        if not HEADER_PART_RE.match(name):
            return {}, f"sip_headers: header name {name!r} must contain only A-Z, a-z and 0-9"
        if not HEADER_PART_RE.match(value):
            return {}, f"sip_headers: value of {name!r} must contain only A-Z, a-z and 0-9"
        if len(name) > MAX_HEADER_NAME:
            return {}, f"sip_headers: header name {name!r} is longer than {MAX_HEADER_NAME} characters"
        if len(value) > MAX_HEADER_VALUE:
            return {}, f"sip_headers: value of {name!r} is longer than {MAX_HEADER_VALUE} characters"
        headers[name] = value
    return headers, None


def _positive_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        return int(str(value)) > 0
    except ValueError:
        return False


def _is_http_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def validate_call(body: Any) -> str | None:
    """The checks Plivo's Call API makes before it fires a call; returns the error text or None."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    missing = [name for name in ("from", "to", "answer_url") if body.get(name) in (None, "")]
    if missing:
        return f"Missing mandatory parameter(s): {', '.join(missing)}"
    src, dst = body["from"], body["to"]
    if not isinstance(src, str) or not DIGITS_RE.match(src):
        return "from: invalid caller id, expected digits"
    if not isinstance(dst, str):
        return "to: invalid destination"
    destinations = dst.split("<")
    for one in destinations:
        if not (DIGITS_RE.match(one) or SIP_URI_RE.match(one)):
            return f"to: invalid destination {one!r}"
    if src in destinations:
        return "src and destination cannot overlap"
    for field in ("answer_url", "hangup_url", "fallback_url", "ring_url"):
        if field in body and body[field] is not None and not _is_http_url(body[field]):
            return f"{field}: invalid URL"
    for field in ("answer_method", "hangup_method", "fallback_method", "ring_method"):
        method = body.get(field)
        if method is not None and str(method).upper() not in ("GET", "POST"):
            return f"{field}: must be GET or POST"
    name = body.get("caller_name")
    if name is not None and (not isinstance(name, str) or len(name) > MAX_CALLER_NAME):
        return f"caller_name: at most {MAX_CALLER_NAME} characters"
    for field in ("ring_timeout", "time_limit"):
        if body.get(field) is not None and not _positive_int(body[field]):
            return f"{field}: must be a positive integer"
    detection = body.get("machine_detection")
    if detection is not None and str(detection).lower() not in ("true", "hangup"):
        return "machine_detection: must be true or hangup"
    _, error = parse_sip_headers(body.get("sip_headers"))
    return error


def _check_status(value: Any) -> str:
    if value not in CALL_STATUSES:
        raise ValueError(f"CallStatus must be one of {', '.join(CALL_STATUSES)}, not {value!r}")
    return value


class CallApiHandler:
    """The Call API half of the simulator's HTTP handler (mixed into server.Handler)."""

    sim: Any
    headers: Any
    path: str
    connection: Any
    close_connection: bool

    def _authorised(self, account: str) -> bool:
        sim = self.sim
        header = self.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return (
            secrets.compare_digest(user, sim.auth_id)
            and secrets.compare_digest(password, sim.auth_token)
            and account == sim.auth_id
        )

    def _make_call(self, account: str, raw: bytes, arrived: float) -> None:
        sim = self.sim
        if sim.latency > 0:
            sim._stopping.wait(sim.latency)
        entry: dict[str, Any] = {
            "time": arrived,
            "path": self.path,
            "account": account,
            "body": None,
            "to": None,
            "status": None,
            "error": None,
        }
        if not self._authorised(account):
            entry.update(status=401, error=ERROR_TEXT[401])
            sim._record(sim.requests, entry)
            self._error(401, ERROR_TEXT[401])
            return
        try:
            body = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError):
            body = None
            entry["body"] = raw.decode("utf-8", "replace")
        else:
            entry["body"] = body
        to = body.get("to") if isinstance(body, dict) and isinstance(body.get("to"), str) else None
        entry["to"] = to
        fault = sim._next_fault(to)
        if fault == "timeout":
            entry.update(status="timeout")
            sim._record(sim.requests, entry)
            self._hold()
            return
        if fault == "reset":
            entry.update(status="reset")
            sim._record(sim.requests, entry)
            self._reset()
            return
        if fault is not None and int(fault) not in SUCCESS:
            status = int(fault)
            entry.update(status=status, error=ERROR_TEXT.get(status, f"HTTP {status}"))
            sim._record(sim.requests, entry)
            self._error(status, entry["error"])
            return
        error = validate_call(body)
        if error:
            entry.update(status=400, error=error)
            sim._record(sim.requests, entry)
            self._error(400, error)
            return
        reply = sim.accept(body, arrived)
        entry.update(status=201, request_uuid=reply["request_uuid"], api_id=reply["api_id"])
        sim._record(sim.requests, entry)
        self._send_json(201, reply)

    # -- call control and records (v2) -------------------------------------------------------------------
    def _api(self, account: str, entry: dict[str, Any]) -> bool:
        """Check auth for a control/record request and start its log entry; False (401 sent) when refused."""
        entry.update(time=time.time(), method=self.command, path=self.path, status=None)
        if not self._authorised(account):
            entry["status"] = 401
            self.sim._record(self.sim.api_requests, entry)
            self._error(401, ERROR_TEXT[401])
            return False
        return True

    def _api_reply(
        self, entry: dict[str, Any], status: int, payload: Any = None, error: str | None = None
    ) -> None:
        entry.update(status=status, error=error)
        self.sim._record(self.sim.api_requests, entry)
        if error is not None:
            self._error(status, error)
        elif payload is None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send_json(status, payload)

    def _delete_every_call(self, account: str) -> None:
        """`DELETE .../Call/` hangs up every call of the account on Plivo: refuse it and record a fault."""
        entry: dict[str, Any] = {"kind": "hangup-all"}
        if not self._api(account, entry):
            return
        self.sim._record(
            self.sim.faults,
            {
                "time": time.time(),
                "fault": "DELETE without a call_uuid (hangs up every call)",
                "path": self.path,
            },
        )
        self._api_reply(entry, 405, error="DELETE on Call/ without a call_uuid is refused by the simulator")

    def _transfer(self, account: str, call_uuid: str, raw: bytes) -> None:
        entry: dict[str, Any] = {"kind": "transfer", "call_uuid": call_uuid}
        if not self._api(account, entry):
            return
        params = _form_or_json(raw, self.headers.get("Content-Type", ""))
        entry["body"] = params
        if params is None:
            self._api_reply(entry, 400, error="request body must be JSON or form-encoded")
            return
        legs = params.get("legs")
        if legs not in ("aleg", "bleg", "both"):
            self._api_reply(entry, 400, error="legs: required, one of aleg, bleg, both")
            return
        if legs in ("bleg", "both"):
            self._api_reply(entry, 400, error="bleg: this call has no B leg")
            return
        url, method = params.get("aleg_url"), str(params.get("aleg_method") or "POST").upper()
        if not _is_http_url(url):
            self._api_reply(entry, 400, error="aleg_url: required for legs=aleg, an http(s) URL")
            return
        if method not in ("GET", "POST"):
            self._api_reply(entry, 400, error="aleg_method: must be GET or POST")
            return
        problem = self.sim.transfer(call_uuid, url, method)
        if problem == "not found":
            self._api_reply(entry, 404, error="call not found")
        elif problem:
            self._api_reply(entry, 400, error=problem)
        else:
            self._api_reply(entry, 202, {"message": "call transferred", "api_id": _new_uuid()})

    def _hangup_call(self, account: str, call_uuid: str) -> None:
        entry: dict[str, Any] = {"kind": "hangup", "call_uuid": call_uuid}
        if not self._api(account, entry):
            return
        if self.sim.hangup_call(call_uuid):
            self._api_reply(entry, 204)
        else:
            self._api_reply(entry, 404, error="call not found")

    def _cancel_request(self, account: str, request_uuid: str) -> None:
        entry: dict[str, Any] = {"kind": "cancel", "request_uuid": request_uuid}
        if not self._api(account, entry):
            return
        if self.sim.hangup_call(request_uuid, queued_only=True):
            self._api_reply(entry, 204)
        else:
            self._api_reply(entry, 404, error="request not found")

    def _get_call(self, account: str, ident: str, query: dict[str, str]) -> None:
        entry: dict[str, Any] = {"kind": "get", "id": ident, "query": query}
        if not self._api(account, entry):
            return
        found = self.sim.find_call(ident, query.get("status"))
        if found is None:
            self._api_reply(entry, 404, error="call not found")
        else:
            self._api_reply(entry, 200, {**found, "api_id": _new_uuid()})

    def _list_calls(self, account: str, query: dict[str, str]) -> None:
        entry: dict[str, Any] = {"kind": "list", "query": query}
        if not self._api(account, entry):
            return
        status = query.get("status")
        if status in ("live", "queued"):
            self._api_reply(entry, 200, {"api_id": _new_uuid(), "calls": self.sim.live_uuids(status)})
            return
        try:
            objects, meta = list_records(list(self.sim.records.values()), query, self.path)
        except ValueError as exc:
            self._api_reply(entry, 400, error=str(exc))
            return
        self._api_reply(entry, 200, {"api_id": _new_uuid(), "meta": meta, "objects": objects})

    def _hold(self) -> None:
        """Keep the request open past the client's read timeout: until it hangs up, or hold_seconds."""
        deadline = time.monotonic() + self.sim.hold_seconds
        while time.monotonic() < deadline and not self.sim._stopping.is_set():
            readable, _, _ = select.select([self.connection], [], [], 0.05)
            if readable:
                try:
                    if not self.connection.recv(1, socket.MSG_PEEK):
                        break
                except OSError:
                    break
        self.close_connection = True

    def _reset(self) -> None:
        """Close the socket with an RST and no reply."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True


def _form_or_json(raw: bytes, content_type: str) -> dict[str, Any] | None:
    if not raw:
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "json" in content_type or text.lstrip().startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None
    return dict(parse_qsl(text, keep_blank_values=True))


def _parse_time(name: str, value: str) -> datetime:
    text = value.strip().replace("T", " ")
    if text.endswith("+00:00"):
        text = text[:-6]
    for layout in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, layout).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise ValueError(f"{name}: expected YYYY-MM-DD HH:MM[:ss] (UTC), not {value!r}")


_COMPARE = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
    "": lambda a, b: a == b,
}


def list_records(
    records: list[dict[str, Any]], query: dict[str, str], path: str, now: datetime | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Plivo's `GET .../Call/` over completed records: filters, 7-day default, 30-day cap, limit <= 20."""
    now = now or datetime.now(UTC)
    try:
        limit = int(query.get("limit", MAX_LIST_LIMIT))
        offset = int(query.get("offset", 0))
    except ValueError:
        raise ValueError("limit and offset must be integers") from None
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise ValueError(f"limit: must be between 1 and {MAX_LIST_LIMIT}")
    if offset < 0:
        raise ValueError("offset: must be >= 0")
    time_filters = []
    lower, upper = None, None
    for op in ("gt", "gte", "lt", "lte", ""):
        key = f"end_time__{op}" if op else "end_time"
        if key in query:
            moment = _parse_time(key, query[key])
            time_filters.append((op, moment))
            if op in ("gt", "gte", ""):
                lower = moment if lower is None else max(lower, moment)
            if op in ("lt", "lte", ""):
                upper = moment if upper is None else min(upper, moment)
    if lower is not None and upper is not None and upper - lower > timedelta(days=MAX_SEARCH_DAYS):
        raise ValueError(f"end_time: a range longer than {MAX_SEARCH_DAYS} days is not allowed")
    if lower is None:
        time_filters.append(("gte", (upper or now) - timedelta(days=DEFAULT_SEARCH_DAYS)))
    selected = []
    for record in records:
        end = _parse_time("end_time", record["end_time"])
        if not all(_COMPARE[op](end, moment) for op, moment in time_filters):
            continue
        if any(
            key in query and str(record[key]) != query[key]
            for key in ("to_number", "from_number", "call_direction", "hangup_cause_code", "hangup_source")
        ):
            continue
        keep = True
        for op in ("gt", "gte", "lt", "lte", ""):
            key = f"bill_duration__{op}" if op else "bill_duration"
            if key in query:
                try:
                    wanted = int(query[key])
                except ValueError:
                    raise ValueError(f"{key}: must be an integer") from None
                keep = keep and _COMPARE[op](int(record["bill_duration"]), wanted)
        if keep:
            selected.append(record)
    selected.sort(key=lambda r: r["end_time"], reverse=True)
    page = selected[offset : offset + limit]
    base = urlsplit(path).path

    def link(at: int) -> str:
        return f"{base}?{urlencode({**query, 'limit': limit, 'offset': at})}"

    meta = {
        "count": len(selected),
        "limit": limit,
        "offset": offset,
        "next": link(offset + limit) if offset + limit < len(selected) else None,
        "previous": link(max(0, offset - limit)) if offset > 0 else None,
        "total_count": len(selected),
    }
    return page, meta

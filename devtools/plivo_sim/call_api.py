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
from typing import Any
from urllib.parse import urlsplit

CALL_PATH_RE = re.compile(r"^/v1/Account/(?P<account>[^/]+)/Call/?$")
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

    def _make_call(self, account: str, raw: bytes) -> None:
        sim = self.sim
        arrived = time.time()
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

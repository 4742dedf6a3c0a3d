"""A local Plivo: the Call API the launcher uses, and Plivo's side of every call it accepts.

Dev tool only (never deployed). It is a real HTTP server so the launcher, the end-to-end tests, `make run`
and the benchmarks talk to it over sockets exactly as they would talk to api.plivo.com:

* `POST /v1/Account/{auth_id}/Call/` checks Basic auth, required fields, `sip_headers` and from/to overlap the
  way Plivo does, and answers `201 call fired`. Latency, scripted replies per destination and random
  429/5xx/timeout rates make the launcher's failure paths reproducible.
* With `play_calls` it then does what Plivo does for each accepted call: requests `answer_url` (signed V3 with
  the account token, Plivo's parameters plus `X-PH-*`), checks the XML, records what the caller would hear,
  and sends the hangup callback with a CallStatus chosen per destination.

In-process: `with PlivoSimulator("MA...", "token", play_calls=True) as sim: ... sim.url ... sim.heard`.
As a process: `python -m devtools.plivo_sim --port 8111 --auth-id A --auth-token T --play-calls`, with
`GET /__sim/calls`, `GET /__sim/heard`, `GET /__sim/requests`, `POST /__sim/config`, `POST /__sim/reset`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import concurrent.futures
import json
import random
import re
import secrets
import select
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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

# Hangup cause Plivo reports for each final CallStatus (name, code).
HANGUP_CAUSES = {
    "completed": ("NORMAL_CLEARING", "4000"),
    "busy": ("USER_BUSY", "3010"),
    "no-answer": ("NO_ANSWER", "3000"),
    "timeout": ("NO_ANSWER", "3000"),
    "failed": ("CALL_REJECTED", "3020"),
    "cancel": ("ORIGINATOR_CANCEL", "2000"),
}
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

# Plivo XML: which verbs each element may contain (PLIVO.md "Plivo XML").
RESPONSE_VERBS = frozenset(
    {
        "Conference",
        "Dial",
        "DTMF",
        "GetDigits",
        "GetInput",
        "Hangup",
        "Message",
        "Play",
        "PreAnswer",
        "Record",
        "Redirect",
        "Speak",
        "Wait",
        "MultiPartyCall",
        "Stream",
    }
)
SSML_TAGS = frozenset(
    {
        "break",
        "cont",
        "emphasis",
        "lang",
        "p",
        "phoneme",
        "prosody",
        "s",
        "say-as",
        "sub",
        "w",
    }
)
ALLOWED_CHILDREN: dict[str, frozenset[str]] = {
    "Response": RESPONSE_VERBS,
    "GetDigits": frozenset({"Speak", "Play", "Wait"}),
    "GetInput": frozenset({"Speak", "Play", "Wait"}),
    "Dial": frozenset({"Number", "User"}),
    "PreAnswer": frozenset({"Speak", "Play", "Wait", "GetDigits", "Redirect", "Message", "DTMF"}),
    "Speak": SSML_TAGS,
}
for _tag in SSML_TAGS:
    ALLOWED_CHILDREN[_tag] = SSML_TAGS
MAX_REDIRECTS = 5


class InvalidAnswerXml(ValueError):
    """The answer URL's reply would make Plivo end the call (hangup cause 8011)."""


def _new_uuid() -> str:
    return str(uuid.uuid4())


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


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


def sign_v3(auth_token: str, method: str, url: str, params: Mapping[str, str], nonce: str) -> str:
    """Plivo's V3 signature, computed by plivo-python itself so the simulator signs exactly like Plivo."""
    from plivo.utils.signature_v3 import construct_get_url, construct_post_url, get_signature_v3

    if method.upper() == "GET":
        base = construct_get_url(url, dict(params)).decode("utf-8")
    else:
        base = construct_post_url(url, dict(params)).decode("utf-8")
    return get_signature_v3(auth_token.encode("utf-8"), base, nonce.encode("utf-8")).decode("ascii")


def _text_of(element) -> str:
    return " ".join("".join(element.itertext()).split())


def parse_answer_xml(text: str) -> Any:
    """Parse and check an answer XML the way Plivo would before acting on it."""
    from xml.etree.ElementTree import ParseError

    import defusedxml.ElementTree as DET
    from defusedxml import DefusedXmlException

    if len(text.encode("utf-8")) > MAX_ANSWER_XML:
        raise InvalidAnswerXml(f"answer XML is larger than {MAX_ANSWER_XML} bytes")
    try:
        root = DET.fromstring(text)
    except (ParseError, DefusedXmlException) as exc:
        raise InvalidAnswerXml(f"not well-formed XML: {exc}") from None
    if root.tag != "Response":
        raise InvalidAnswerXml(f"root element is <{root.tag}>, expected <Response>")

    def walk(element) -> None:
        allowed = ALLOWED_CHILDREN.get(element.tag, frozenset())
        for child in element:
            if child.tag not in allowed:
                raise InvalidAnswerXml(f"<{child.tag}> is not allowed inside <{element.tag}>")
            walk(child)

    walk(root)
    return root


class CallScript:
    """What the caller hears, collected while walking the verbs of one answer XML."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.spoken: list[str] = []
        self.played: list[str] = []
        self.digits: list[dict[str, Any]] = []
        self.hangup: dict[str, Any] | None = None
        self.seconds = 0.0

    def run(self, root) -> str | None:
        """Walk `root`'s verbs in order; returns a Redirect URL when the XML hands the call on."""
        for verb in root:
            redirect = self._verb(verb)
            if redirect or self.hangup is not None:
                return redirect
        return None

    def _speak(self, element) -> None:
        text = _text_of(element)
        self.spoken.append(text)
        self.events.append(
            {
                "verb": "Speak",
                "text": text,
                "voice": element.get("voice", "WOMAN"),
                "language": element.get("language", "en-US"),
            }
        )
        self.seconds += max(1.0, len(text.split()) / 2.5)

    def _play(self, element) -> None:
        url = (element.text or "").strip()
        self.played.append(url)
        self.events.append({"verb": "Play", "url": url})
        self.seconds += 5.0

    def _wait(self, element) -> None:
        length = element.get("length", "1")
        self.events.append({"verb": "Wait", "length": length})
        self.seconds += float(length) if length.replace(".", "", 1).isdigit() else 1.0

    def _verb(self, verb) -> str | None:
        tag = verb.tag
        if tag == "Speak":
            self._speak(verb)
        elif tag == "Play":
            self._play(verb)
        elif tag == "Wait":
            self._wait(verb)
        elif tag in ("GetDigits", "GetInput"):
            prompt = {
                "verb": tag,
                "action": verb.get("action"),
                "num_digits": verb.get("numDigits"),
                "valid_digits": verb.get("validDigits"),
                "input_type": verb.get("inputType"),
                "prompts": [],
            }
            self.events.append(prompt)
            for child in verb:
                before = len(self.events)
                self._verb(child)
                prompt["prompts"].extend(self.events[before:])
                del self.events[before:]
            self.digits.append({k: v for k, v in prompt.items() if k != "prompts"})
            # The simulated caller presses nothing: Plivo times out and goes on with the next verb.
        elif tag == "PreAnswer":
            for child in verb:
                redirect = self._verb(child)
                if redirect:
                    return redirect
        elif tag == "Hangup":
            self.hangup = {"reason": verb.get("reason"), "schedule": verb.get("schedule")}
            self.events.append({"verb": "Hangup", **self.hangup})
        elif tag == "Redirect":
            url = (verb.text or "").strip()
            self.events.append({"verb": "Redirect", "url": url, "method": verb.get("method", "POST")})
            return url
        elif tag == "Dial":
            targets = [_text_of(child) for child in verb]
            self.events.append({"verb": "Dial", "targets": targets})
        else:
            self.events.append({"verb": tag, "text": _text_of(verb), "attributes": dict(verb.attrib)})
        return None


class PlivoSimulator:
    """Plivo's Call API and call behaviour on a local port. Thread-safe; all records are plain dicts."""

    def __init__(
        self,
        auth_id: str,
        auth_token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        play_calls: bool = False,
        status_by_suffix: Mapping[str, str] | None = None,
        hold_seconds: float = 30.0,
        answer_timeout: float = 5.0,
        ring_seconds: float = 0.0,
        seed: int | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.auth_id = auth_id
        self.auth_token = auth_token
        self.host = host
        self.port = port
        self.latency = latency
        self.play_calls = play_calls
        self.status_by_suffix: dict[str, str] = dict(status_by_suffix or {})
        # Per destination, CallStatus values used in order before status_by_suffix applies.
        self.status_script: dict[str, list[str]] = {}
        self.hold_seconds = hold_seconds
        self.answer_timeout = answer_timeout
        self.ring_seconds = ring_seconds
        self.script: dict[str, list[int | str]] = {}
        self.calls: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.heard: list[dict[str, Any]] = []
        self.rate_429 = 0.0
        self.rate_5xx = 0.0
        self.rate_timeout = 0.0
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._players: concurrent.futures.ThreadPoolExecutor | None = None
        self._log = log

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> PlivoSimulator:
        handler = type("BoundHandler", (_Handler,), {"sim": self})
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._stopping.clear()
        self._players = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="plivo-call")
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="plivo-sim", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._players is not None:
            self._players.shutdown(wait=False, cancel_futures=True)
            self._players = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> PlivoSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL to use as PLIVO_API_URL."""
        return f"http://{self.host}:{self.port}"

    # -- knobs -----------------------------------------------------------------------------------------
    def set_faults(self, rate_429: float = 0.0, rate_5xx: float = 0.0, rate_timeout: float = 0.0) -> None:
        """Random fault rates (0..1) applied to Call API requests that have no scripted reply."""
        for name, rate in (("rate_429", rate_429), ("rate_5xx", rate_5xx), ("rate_timeout", rate_timeout)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if rate_429 + rate_5xx + rate_timeout > 1.0:
            raise ValueError("fault rates add up to more than 1")
        self.rate_429, self.rate_5xx, self.rate_timeout = rate_429, rate_5xx, rate_timeout

    def configure(self, knobs: Mapping[str, Any]) -> None:
        """Apply JSON knobs (the process mode's POST /__sim/config)."""
        known = {
            "latency",
            "play_calls",
            "status_by_suffix",
            "status_script",
            "script",
            "rate_429",
            "rate_5xx",
            "rate_timeout",
            "hold_seconds",
            "ring_seconds",
            "answer_timeout",
        }
        unknown = set(knobs) - known
        if unknown:
            raise ValueError(f"unknown knob(s): {', '.join(sorted(unknown))}")
        if "latency" in knobs:
            self.latency = float(knobs["latency"])
        if "hold_seconds" in knobs:
            self.hold_seconds = float(knobs["hold_seconds"])
        if "ring_seconds" in knobs:
            self.ring_seconds = float(knobs["ring_seconds"])
        if "answer_timeout" in knobs:
            self.answer_timeout = float(knobs["answer_timeout"])
        if "play_calls" in knobs:
            self.play_calls = bool(knobs["play_calls"])
        if "status_by_suffix" in knobs:
            self.status_by_suffix = {str(k): _check_status(v) for k, v in knobs["status_by_suffix"].items()}
        if "status_script" in knobs:
            for to, statuses in knobs["status_script"].items():
                self.status_script[str(to)] = [_check_status(s) for s in statuses]
        if "script" in knobs:
            for to, replies in knobs["script"].items():
                self.script[str(to)] = list(replies)
        if any(k in knobs for k in ("rate_429", "rate_5xx", "rate_timeout")):
            self.set_faults(
                float(knobs.get("rate_429", self.rate_429)),
                float(knobs.get("rate_5xx", self.rate_5xx)),
                float(knobs.get("rate_timeout", self.rate_timeout)),
            )

    def reset(self) -> None:
        """Forget recorded calls, requests and heard results (knobs stay)."""
        with self._lock:
            self.calls.clear()
            self.requests.clear()
            self.heard.clear()
            self.script.clear()
            self.status_script.clear()

    def wait_for(self, predicate: Callable[[PlivoSimulator], bool], timeout: float = 10.0) -> bool:
        """Block until predicate(sim) holds (re-checked on every recorded event) or timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.2))
        return True

    def heard_by_to(self) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            result: dict[str, list[dict[str, Any]]] = {}
            for record in self.heard:
                result.setdefault(record["to"], []).append(record)
            return result

    # -- internals -------------------------------------------------------------------------------------
    def _record(self, target: list[dict[str, Any]], item: dict[str, Any]) -> None:
        with self._changed:
            target.append(item)
            self._changed.notify_all()

    def _say(self, message: str) -> None:
        if self._log is not None:
            self._log(message)

    def _next_fault(self, to: str | None) -> int | str | None:
        """The scripted reply for this destination if any, else a random fault, else None."""
        with self._lock:
            queue = self.script.get(to) if to is not None else None
            if queue:
                return queue.pop(0)
            draw = self._random.random()
        if draw < self.rate_429:
            return 429
        if draw < self.rate_429 + self.rate_5xx:
            return self._random.choice((500, 502, 503))
        if draw < self.rate_429 + self.rate_5xx + self.rate_timeout:
            return "timeout"
        return None

    def _final_status(self, to: str) -> str:
        with self._lock:
            queue = self.status_script.get(to)
            if queue:
                return queue.pop(0)
        digits = to
        best = ""
        for suffix in self.status_by_suffix:
            if digits.endswith(suffix) and len(suffix) > len(best):
                best = suffix
        return self.status_by_suffix[best] if best else "completed"

    def accept(self, body: dict[str, Any], arrived: float | None = None) -> dict[str, Any]:
        """Record an accepted call (stamped with the request's arrival) and start playing it; returns
        Plivo's 201 body."""
        arrived = time.time() if arrived is None else arrived
        api_id = _new_uuid()
        destinations = body["to"].split("<")
        uuids = [_new_uuid() for _ in destinations]
        for to, request_uuid in zip(destinations, uuids, strict=True):
            call = {"body": body, "time": arrived, "request_uuid": request_uuid, "api_id": api_id, "to": to}
            self._record(self.calls, call)
            if self.play_calls and self._players is not None and not self._stopping.is_set():
                try:
                    self._players.submit(self._play_safely, call)
                except RuntimeError:
                    pass  # shutting down
        if len(uuids) == 1:
            return {"message": "call fired", "request_uuid": uuids[0], "api_id": api_id}
        return {"message": "calls fired", "request_uuid": uuids, "api_id": api_id}

    def _play_safely(self, call: dict[str, Any]) -> None:
        try:
            self._play(call)
        except Exception as exc:  # noqa: BLE001 - a dev tool must keep serving and say what went wrong
            self._record(
                self.heard,
                {
                    "to": call["to"],
                    "request_uuid": call["request_uuid"],
                    "spoken": [],
                    "error": f"simulator error: {exc!r}",
                },
            )
            self._say(f"plivo-sim: playing call to {call['to']} failed: {exc!r}")

    def _signed_request(self, session, method: str, url: str, params: dict[str, str]):
        nonce = str(secrets.randbelow(10**20))
        method = method.upper()
        if method == "GET":
            parts = urlsplit(url)
            query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
            target = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
            signature = sign_v3(self.auth_token, "GET", url, params, nonce)
            headers = {
                "X-Plivo-Signature-V3": signature,
                "X-Plivo-Signature-Ma-V3": signature,
                "X-Plivo-Signature-V3-Nonce": nonce,
                "User-Agent": "PlivoSimulator",
            }
            return session.get(target, headers=headers, timeout=(2.0, self.answer_timeout))
        signature = sign_v3(self.auth_token, "POST", url, params, nonce)
        headers = {
            "X-Plivo-Signature-V3": signature,
            "X-Plivo-Signature-Ma-V3": signature,
            "X-Plivo-Signature-V3-Nonce": nonce,
            "User-Agent": "PlivoSimulator",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        return session.post(
            url.split("#", 1)[0], data=params, headers=headers, timeout=(2.0, self.answer_timeout)
        )

    def _fetch_answer(self, session, method: str, url: str, params: dict[str, str]) -> tuple[int, str, str]:
        """Request an answer URL like Plivo: up to 3 tries on connection errors and 5xx."""
        import requests

        last: tuple[int, str, str] = (0, "", "")
        for attempt in range(3):
            if self._stopping.is_set():
                break
            try:
                reply = self._signed_request(session, method, url, params)
            except requests.RequestException as exc:
                last = (0, "", f"{type(exc).__name__}: {exc}")
            else:
                last = (reply.status_code, reply.headers.get("Content-Type", ""), reply.text)
                if reply.status_code < 500:
                    return last
            if attempt < 2:
                self._stopping.wait(0.2 * (attempt + 1))
        return last

    def _play(self, call: dict[str, Any]) -> None:
        import requests

        body = call["body"]
        to = call["to"]
        headers, _ = parse_sip_headers(body.get("sip_headers"))
        call_uuid = _new_uuid()
        started = _now_text()
        base_params: dict[str, str] = {
            "From": body["from"],
            "To": to,
            "CallUUID": call_uuid,
            "RequestUUID": call["request_uuid"],
            "ALegUUID": call_uuid,
            "ALegRequestUUID": call["request_uuid"],
            "Direction": "outbound",
            "BillRate": "0.00300",
            "ParentAuthID": self.auth_id,
        }
        if body.get("caller_name"):
            base_params["CallerName"] = str(body["caller_name"])
        base_params.update({f"X-PH-{name}": value for name, value in headers.items()})
        record: dict[str, Any] = {
            "to": to,
            "from": body["from"],
            "request_uuid": call["request_uuid"],
            "call_uuid": call_uuid,
            "headers": headers,
            "answer_url": body["answer_url"],
            "answer_status": None,
            "answer_xml": None,
            "spoken": [],
            "played": [],
            "digits": [],
            "hangup": None,
            "events": [],
            "error": None,
            "call_status": None,
            "hangup_cause": None,
            "duration": 0,
            "hangup_url": body.get("hangup_url"),
            "hangup_status": None,
            "hangup_error": None,
        }
        if self.ring_seconds:
            self._stopping.wait(self.ring_seconds)
        status = self._final_status(to)
        cause, code = HANGUP_CAUSES[status]
        answer_time = ""
        duration = 0
        with requests.Session() as session:
            if status == "completed":
                answer_time = _now_text()
                params = {
                    **base_params,
                    "Event": "StartApp",
                    "CallStatus": "in-progress",
                    "SessionStart": answer_time,
                }
                script = CallScript()
                url, method = body["answer_url"], str(body.get("answer_method") or "POST")
                for _ in range(MAX_REDIRECTS + 1):
                    http_status, content_type, text = self._fetch_answer(session, method, url, params)
                    record["answer_status"] = http_status
                    record["answer_xml"] = text
                    problem = _answer_problem(http_status, content_type, text)
                    if problem:
                        record["error"] = problem
                        cause, code = "Invalid Answer XML", "8011"
                        break
                    try:
                        root = parse_answer_xml(text)
                    except InvalidAnswerXml as exc:
                        record["error"] = str(exc)
                        cause, code = "Invalid Answer XML", "8011"
                        break
                    redirect = script.run(root)
                    if not redirect:
                        break
                    url, method = redirect, "POST"
                    params = {**params, "Event": "Redirect"}
                record.update(
                    events=script.events,
                    spoken=script.spoken,
                    played=script.played,
                    digits=script.digits,
                    hangup=script.hangup,
                )
                duration = max(1, int(round(script.seconds)))
            record.update(call_status=status, hangup_cause=cause, duration=duration)
            hangup_url = body.get("hangup_url")
            if hangup_url and not self._stopping.is_set():
                params = {
                    **base_params,
                    "Event": "Hangup",
                    "CallStatus": status,
                    "HangupCause": cause,
                    "HangupCauseName": cause,
                    "HangupCauseCode": code,
                    "HangupSource": "Callee",
                    "Duration": str(duration),
                    "BillDuration": str(duration),
                    "TotalCost": f"{0.003 * duration / 60:.5f}",
                    "StartTime": started,
                    "AnswerTime": answer_time,
                    "EndTime": _now_text(),
                }
                try:
                    reply = self._signed_request(
                        session, str(body.get("hangup_method") or "POST"), hangup_url, params
                    )
                    record["hangup_status"] = reply.status_code
                except requests.RequestException as exc:
                    record["hangup_error"] = f"{type(exc).__name__}: {exc}"
        self._record(self.heard, record)
        self._say(f"plivo-sim: call to {to} {status}; heard {record['spoken']!r}")


def _check_status(value: Any) -> str:
    if value not in CALL_STATUSES:
        raise ValueError(f"CallStatus must be one of {', '.join(CALL_STATUSES)}, not {value!r}")
    return value


def _answer_problem(status: int, content_type: str, text: str) -> str | None:
    if status == 0:
        return f"answer URL unreachable: {text}"
    if status != 200:
        return f"answer URL returned HTTP {status}"
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind not in ("application/xml", "text/xml"):
        return f"answer URL returned Content-Type {content_type!r}, expected application/xml"
    return None


class _Handler(BaseHTTPRequestHandler):
    sim: PlivoSimulator
    protocol_version = "HTTP/1.1"
    server_version = "PlivoSimulator/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send_json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._send_json(status, {"api_id": _new_uuid(), "error": message})

    # -- routing ---------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        sim = self.sim
        views = {
            "/__sim/calls": lambda: sim.calls,
            "/__sim/heard": lambda: sim.heard,
            "/__sim/requests": lambda: sim.requests,
        }
        if path in views:
            with sim._lock:
                payload = json.loads(json.dumps(views[path](), default=str))
            self._send_json(200, payload)
        elif path == "/__sim/config":
            self._send_json(200, _knobs(sim))
        elif CALL_PATH_RE.match(path):
            self._error(405, ERROR_TEXT[405])
        else:
            self._error(404, ERROR_TEXT[404])

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        raw = self._read_body()
        if path == "/__sim/config":
            try:
                self.sim.configure(json.loads(raw or b"{}"))
            except (ValueError, TypeError, AttributeError) as exc:
                self._error(400, str(exc))
            else:
                self._send_json(200, _knobs(self.sim))
        elif path == "/__sim/reset":
            self.sim.reset()
            self._send_json(200, {"reset": True})
        else:
            match = CALL_PATH_RE.match(path)
            if match is None:
                self._error(404, ERROR_TEXT[404])
            else:
                self._make_call(match.group("account"), raw)

    # -- the Call API ----------------------------------------------------------------------------------
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


def _knobs(sim: PlivoSimulator) -> dict[str, Any]:
    return {
        "latency": sim.latency,
        "play_calls": sim.play_calls,
        "status_by_suffix": sim.status_by_suffix,
        "rate_429": sim.rate_429,
        "rate_5xx": sim.rate_5xx,
        "rate_timeout": sim.rate_timeout,
        "hold_seconds": sim.hold_seconds,
        "ring_seconds": sim.ring_seconds,
        "answer_timeout": sim.answer_timeout,
        "script": sim.script,
        "status_script": sim.status_script,
    }


def _suffix_map(items: list[str]) -> dict[str, str]:
    mapping = {}
    for item in items:
        suffix, sep, status = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--status {item!r}: expected SUFFIX=STATUS, e.g. 0=busy")
        mapping[suffix] = _check_status(status)
    return mapping


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.plivo_sim", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8111)
    parser.add_argument("--auth-id", required=True)
    parser.add_argument("--auth-token", required=True)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every Call API request")
    parser.add_argument("--play-calls", action="store_true", help="request answer_url and send hangups")
    parser.add_argument(
        "--status",
        action="append",
        default=[],
        metavar="SUFFIX=STATUS",
        help="CallStatus for destinations ending in SUFFIX (repeatable), e.g. 0=busy",
    )
    parser.add_argument("--ring-seconds", type=float, default=0.0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        statuses = _suffix_map(args.status)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        parser.error(str(exc))
    logger = None if args.quiet else (lambda message: print(message, flush=True))
    sim = PlivoSimulator(
        args.auth_id,
        args.auth_token,
        host=args.host,
        port=args.port,
        latency=args.latency,
        play_calls=args.play_calls,
        status_by_suffix=statuses,
        ring_seconds=args.ring_seconds,
        log=logger,
    )
    try:
        sim.start()
    except OSError as exc:
        print(f"plivo-sim: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"plivo-sim listening on {sim.url}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    while not done.wait(0.5):
        pass
    sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The simulator's HTTP server: the Call API (call_api.py) and the `/__sim` control endpoints, calls
played by player.py; in-process (`PlivoSimulator(...).start()`) or as a process (`main`)."""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import random
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from devtools.plivo_sim.call_api import (
    CALL_ID_RE,
    CALL_PATH_RE,
    ERROR_TEXT,
    REQUEST_ID_RE,
    CallApiHandler,
    _check_status,
    _new_uuid,
)
from devtools.plivo_sim.callee import ANSWER_OF_STATUS, ScriptError, parse_scripts
from devtools.plivo_sim.player import MAX_STEPS, MAX_TRANSFERS, CallPlayer, LiveCall, call_record
from devtools.supervisor import stop_on_signals


class PlivoSimulator(CallPlayer):
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
        max_steps: int = MAX_STEPS,
        transfer_wait: float = 2.0,
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
        # v2: callee scripts per destination ("*": any other), {"scripts": [...], "once": bool} (callee.py).
        self.callees: dict[str, dict[str, Any]] = {}
        self.lose_hangups: dict[str, int] = {}  # destination or "*": how many hangup callbacks to drop
        self.max_steps = max_steps
        self.transfer_wait = transfer_wait
        self.live: dict[str, LiveCall] = {}  # call_uuid -> live state (kept after the end, state completed)
        self.by_request: dict[str, LiveCall] = {}
        self.records: dict[str, dict[str, Any]] = {}  # call_uuid -> Plivo call record, once completed
        self.api_requests: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any]] = []
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
        handler = type("BoundHandler", (Handler,), {"sim": self})
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
            "callees",
            "lose_hangups",
            "max_steps",
            "transfer_wait",
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
        if "callees" in knobs:
            self.set_callees(knobs["callees"])
        if "lose_hangups" in knobs:
            for to, count in knobs["lose_hangups"].items():
                self.lose_hangups[str(to)] = int(count)
        if "max_steps" in knobs:
            self.max_steps = max(1, int(knobs["max_steps"]))
        if "transfer_wait" in knobs:
            self.transfer_wait = float(knobs["transfer_wait"])
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
            self.callees.clear()
            self.lose_hangups.clear()
            self.records.clear()
            self.api_requests.clear()
            self.faults.clear()
            for uuid, live in list(self.live.items()):
                if live.state == "completed":
                    del self.live[uuid]
                    self.by_request.pop(live.request_uuid, None)

    # -- callees (v2) ----------------------------------------------------------------------------------
    def set_callee(self, to: str, script: Any) -> None:
        """What the callee at `to` does ("*": every destination without its own script). A script (dict or
        answer name) applies to every call; a list of scripts is used one per call, then the defaults apply.
        None removes it. Raises ScriptError (a ValueError) for a script the simulator cannot follow."""
        if script is None:
            with self._lock:
                self.callees.pop(str(to), None)
            return
        scripts = parse_scripts(script)
        with self._lock:
            self.callees[str(to)] = {"scripts": scripts, "once": isinstance(script, list)}

    def set_callees(self, callees: Mapping[str, Any]) -> None:
        if not isinstance(callees, Mapping):
            raise ScriptError("callees: expected an object {number: script}")
        parsed = {
            str(to): (None if s is None else (parse_scripts(s), isinstance(s, list)))
            for to, s in callees.items()
        }
        with self._lock:
            for to, value in parsed.items():
                if value is None:
                    self.callees.pop(to, None)
                else:
                    self.callees[to] = {"scripts": value[0], "once": value[1]}

    def _take_callee(self, key: str) -> dict[str, Any] | None:
        entry = self.callees.get(key)
        if not entry or not entry["scripts"]:
            return None
        if entry["once"]:
            script = entry["scripts"].pop(0)
            if not entry["scripts"]:
                del self.callees[key]
            return script
        return entry["scripts"][0]

    def _script_for(self, to: str) -> dict[str, Any]:
        """The callee's script: its own, else v1's status_script queue, else "*", else v1's suffix rules."""
        with self._lock:
            script = self._take_callee(to)
            if script is not None:
                return script
            queue = self.status_script.get(to)
            if queue:
                return {"answer": ANSWER_OF_STATUS[queue.pop(0)], "inputs": [], "dial": []}
            script = self._take_callee("*")
            if script is not None:
                return script
        status = self._suffix_status(to)
        return {"answer": ANSWER_OF_STATUS[status], "inputs": [], "dial": []}

    def _lose_hangup(self, live: LiveCall) -> bool:
        if live.script.get("lose_hangup"):
            return True
        with self._lock:
            for key in (live.to, "*"):
                if self.lose_hangups.get(key, 0) > 0:
                    self.lose_hangups[key] -= 1
                    return True
        return False

    def _finish(self, live: LiveCall, record: dict[str, Any]) -> None:
        with self._changed:
            self.records[live.call_uuid] = call_record(live, record, self.auth_id)
            self._changed.notify_all()

    # -- call control (v2) -------------------------------------------------------------------------------
    def transfer(self, call_uuid: str, url: str, method: str = "POST") -> str | None:
        """Move a live call to `url` (Plivo's transfer API); None when done, else why not."""
        with self._changed:
            live = self.live.get(call_uuid)
            if live is None or live.state != "in-progress" or live.hangup_requested:
                return "not found"
            if live.transfers >= MAX_TRANSFERS:
                return "Loop detected"
            live.transfers += 1
            live.transfer = (url, method)
            live.wake.set()
            self._changed.notify_all()
        return None

    def hangup_call(self, ident: str, queued_only: bool = False) -> bool:
        """Hang up (or cancel, before the answer) a call by call_uuid, or a queued one by request_uuid."""
        with self._changed:
            live = self.live.get(ident) if not queued_only else None
            if live is None:
                live = self.by_request.get(ident)
                if live is not None and live.state not in ("queued", "ringing"):
                    live = None
            if live is None or live.state == "completed" or live.hangup_requested:
                return False
            live.hangup_requested = True
            live.wake.set()
            self._changed.notify_all()
        return True

    def find_call(self, ident: str, status: str | None = None) -> dict[str, Any] | None:
        """GET .../Call/{id}/: a completed call's record; `status=live` a live call; `status=queued` (by
        request_uuid) a call not yet ringing."""
        with self._lock:
            if status == "queued":
                live = self.by_request.get(ident)
                if live is None or live.state != "queued":
                    return None
                return {
                    "call_status": "queued",
                    "direction": "outbound",
                    "from": live.call["body"]["from"],
                    "to": live.to,
                    "caller_name": live.call["body"].get("caller_name", ""),
                    "request_uuid": live.request_uuid,
                }
            if status == "live":
                live = self.live.get(ident)
                if live is None or live.state not in ("ringing", "in-progress"):
                    return None
                return {
                    "call_status": "ringing" if live.state == "ringing" else "in-progress",
                    "call_uuid": live.call_uuid,
                    "direction": "outbound",
                    "from": live.call["body"]["from"],
                    "to": live.to,
                    "caller_name": live.call["body"].get("caller_name", ""),
                    "request_uuid": live.request_uuid,
                    "session_start": live.answered.strftime("%Y-%m-%d %H:%M:%S") if live.answered else None,
                }
            record = self.records.get(ident)
            return dict(record) if record is not None else None

    def live_uuids(self, status: str) -> list[str]:
        with self._lock:
            if status == "queued":
                return [live.request_uuid for live in self.live.values() if live.state == "queued"]
            return [live.call_uuid for live in self.live.values() if live.state in ("ringing", "in-progress")]

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

    def _suffix_status(self, to: str) -> str:
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
            if self.play_calls:
                call["call_uuid"] = _new_uuid()
                live = LiveCall(call, self._script_for(to))
                with self._lock:
                    self.live[live.call_uuid] = live
                    self.by_request[request_uuid] = live
            self._record(self.calls, call)
            if self.play_calls and self._players is not None and not self._stopping.is_set():
                try:
                    self._players.submit(self._play_safely, call)
                except RuntimeError:
                    pass  # shutting down
        if len(uuids) == 1:
            return {"message": "call fired", "request_uuid": uuids[0], "api_id": api_id}
        return {"message": "calls fired", "request_uuid": uuids, "api_id": api_id}


SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux's value; Python names it from 3.12 on


class StampedSocketIO(io.RawIOBase):
    """A socket's reads, each remembering when the kernel received its first byte (SO_TIMESTAMPNS)."""

    def __init__(self, connection: socket.socket) -> None:
        super().__init__()
        self._connection = connection
        self.stamp: float | None = None

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._connection.fileno()

    def readinto(self, buffer: Any) -> int:
        size, ancillary, _, _ = self._connection.recvmsg_into([buffer], socket.CMSG_SPACE(16))
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= 16:
                seconds, nanoseconds = struct.unpack("qq", payload[:16])
                self.stamp = seconds + nanoseconds / 1e9
        return size


class Handler(CallApiHandler, BaseHTTPRequestHandler):
    sim: PlivoSimulator
    protocol_version = "HTTP/1.1"
    server_version = "PlivoSimulator/1.0"
    arrived = 0.0

    def log_message(self, format: str, *args: Any) -> None:
        pass

    _raw: StampedSocketIO | None = None

    def setup(self) -> None:
        super().setup()
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except OSError:
            return  # no kernel stamps here: the request line's parse time stands in
        self._raw = StampedSocketIO(self.connection)
        self.rfile = io.BufferedReader(self._raw)

    def parse_request(self) -> bool:
        # Plivo's clock for a call's start: the request's arrival, before headers, body and auth; the
        # kernel's receive time of its first bytes, not this thread's: under CPU load a thread reads a
        # request tens of milliseconds late, and by a different amount each time.
        stamp = self._raw.stamp if self._raw is not None else None
        self.arrived = stamp if stamp is not None else time.time()
        return super().parse_request()

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
            "/__sim/api": lambda: sim.api_requests,
            "/__sim/faults": lambda: sim.faults,
            "/__sim/records": lambda: list(sim.records.values()),
            "/__sim/callees": lambda: sim.callees,
            "/__sim/live": lambda: [
                {"call_uuid": c.call_uuid, "request_uuid": c.request_uuid, "to": c.to, "state": c.state}
                for c in sim.live.values()
            ],
        }
        query = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        if path in views:
            with sim._lock:
                payload = json.loads(json.dumps(views[path](), default=str))
            self._send_json(200, payload)
        elif path == "/__sim/config":
            self._send_json(200, _knobs(sim))
        elif match := CALL_PATH_RE.match(path):
            self._list_calls(match.group("account"), query)
        elif match := CALL_ID_RE.match(path):
            self._get_call(match.group("account"), match.group("id"), query)
        else:
            self._error(404, ERROR_TEXT[404])

    def do_DELETE(self) -> None:
        path = urlsplit(self.path).path
        self._read_body()
        if match := CALL_PATH_RE.match(path):
            self._delete_every_call(match.group("account"))
        elif match := CALL_ID_RE.match(path):
            self._hangup_call(match.group("account"), match.group("id"))
        elif match := REQUEST_ID_RE.match(path):
            self._cancel_request(match.group("account"), match.group("id"))
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
        elif path == "/__sim/callees":
            try:
                self.sim.set_callees(json.loads(raw or b"{}"))
            except (ValueError, TypeError, AttributeError) as exc:
                self._error(400, str(exc))
            else:
                with self.sim._lock:
                    self._send_json(200, json.loads(json.dumps(self.sim.callees)))
        elif path == "/__sim/lose-hangup":
            try:
                knob = json.loads(raw or b"{}")
                self.sim.configure({"lose_hangups": {str(knob.get("to", "*")): int(knob.get("count", 1))}})
            except (ValueError, TypeError, AttributeError) as exc:
                self._error(400, str(exc))
            else:
                self._send_json(200, {"lose_hangups": self.sim.lose_hangups})
        elif match := CALL_PATH_RE.match(path):
            self._make_call(match.group("account"), raw, self.arrived)
        elif match := CALL_ID_RE.match(path):
            self._transfer(match.group("account"), match.group("id"), raw)
        else:
            self._error(404, ERROR_TEXT[404])


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
        "callees": sim.callees,
        "lose_hangups": sim.lose_hangups,
        "max_steps": sim.max_steps,
        "transfer_wait": sim.transfer_wait,
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
    done = threading.Event()
    # Handlers first: a stop sent as soon as the "listening" line is read must not find the default one.
    # A second signal while the simulator stops is the same stop.
    with stop_on_signals(done):
        try:
            sim.start()
        except OSError as exc:
            print(
                f"plivo-sim: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr
            )
            return 2
        print(f"plivo-sim listening on {sim.url}", flush=True)
        done.wait()
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

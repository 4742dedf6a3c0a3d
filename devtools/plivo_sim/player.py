"""Plivo's side of each accepted call: ring the callee, follow its script (callee.py), request the answer URL
(signed V3, Plivo's parameters plus `X-PH-*`), check each XML against the simulator's own copy of the Plivo
XML grammar, follow the verbs like Plivo (GetDigits/GetInput/Record/Dial actions, Redirect, Hangup, transfers
and hangups requested through the API, machine detection), record every step, and send the hangup callback."""

from __future__ import annotations

import math
import secrets
import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from devtools.events import sign_v3
from devtools.plivo_sim.call_api import _new_uuid, parse_sip_headers
from devtools.plivo_sim.callee import CAUSES, UNANSWERED, accepts

MAX_ANSWER_XML = 100 * 1024
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
MAX_REDIRECTS = 5  # v1's bound, kept as a name; v2 bounds all steps with PlivoSimulator.max_steps
MAX_STEPS = 50  # documents fetched per call (answer, actions, redirects, transfers) before "Loop Detected"
MAX_TRANSFERS = 70  # Plivo's limit per call (PLIVO.md "Call control")
BILLING_INCREMENT = 60
RATE_PER_MINUTE = 0.003


class InvalidAnswerXml(ValueError):
    """The answer URL's reply would make Plivo end the call (hangup cause 8011)."""


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


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


def _answer_problem(status: int, content_type: str, text: str) -> str | None:
    if status == 0:
        return f"answer URL unreachable: {text}"
    if status != 200:
        return f"answer URL returned HTTP {status}"
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind not in ("application/xml", "text/xml"):
        return f"answer URL returned Content-Type {content_type!r}, expected application/xml"
    return None


def _time_text(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _record_time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S+00:00")


class LiveCall:
    """One call's live state, shared between its player thread and the call control API handlers."""

    def __init__(self, call: dict[str, Any], script: dict[str, Any]) -> None:
        self.call = call
        self.script = script
        self.request_uuid: str = call["request_uuid"]
        self.call_uuid: str = call["call_uuid"]
        self.to: str = call["to"]
        self.state = "queued"  # queued -> ringing -> in-progress -> completed
        self.transfer: tuple[str, str] | None = None
        self.transfers = 0
        self.hangup_requested = False
        self.wake = threading.Event()
        self.started = datetime.now(UTC)
        self.answered: datetime | None = None


class Ended(Exception):
    """The call ends now: (cause key in callee.CAUSES, HangupSource)."""

    def __init__(self, cause: str, source: str) -> None:
        super().__init__(cause)
        self.cause = cause
        self.source = source


class Flow:
    """Follow an answered call's documents and verbs like Plivo; the callee's script is the other party."""

    def __init__(
        self, player: CallPlayer, session, live: LiveCall, base: dict[str, str], record: dict
    ) -> None:
        self.player = player
        self.session = session
        self.live = live
        self.base = base
        self.record = record
        self.script = live.script
        self.inputs = list(self.script.get("inputs", []))
        self.dials = list(self.script.get("dial", []))
        self.seconds = 0.0
        self.deadline: tuple[float, str] | None = None
        if self.script.get("hangup_after") is not None:
            self.deadline = (float(self.script["hangup_after"]), "Callee")
        self.step: dict[str, Any] | None = None

    # -- the documents -------------------------------------------------------------------------------------
    def run(self, url: str, method: str, params: dict[str, str], fallback: tuple[str, str] | None) -> None:
        request: tuple[str, str, dict[str, str], str] | None = (url, method, params, "answer")
        machine_pending = self.player._machine_wanted(self.live)
        for index in range(self.player.max_steps):
            assert request is not None
            root = self._fetch_document(*request, fallback=fallback if index == 0 else None)
            if machine_pending:
                machine_pending = False
                self.player._machine_detection(self)
            request = self._walk(root)
            if request is None:
                request = self._interrupt()
            if request is None:
                raise Ended("end_of_xml", "Plivo")
        raise Ended("loop", "Plivo")

    def _fetch_document(
        self,
        url: str,
        method: str,
        params: dict[str, str],
        kind: str,
        fallback: tuple[str, str] | None = None,
    ):
        step = self._request(url, method, params, kind)
        problem = _answer_problem(step["status"], step.pop("_content_type"), step["xml"] or "")
        if problem and fallback is not None:
            self.record["fallback_used"] = True
            step = self._request(fallback[0], fallback[1], params, "fallback")
            problem = _answer_problem(step["status"], step.pop("_content_type"), step["xml"] or "")
        self.record["answer_status"] = step["status"]
        self.record["answer_xml"] = step["xml"]
        if problem is None:
            try:
                return parse_answer_xml(step["xml"])
            except InvalidAnswerXml as exc:
                problem = str(exc)
        step["error"] = problem
        self.record["error"] = problem
        raise Ended("invalid_xml", "Error")

    def _request(self, url: str, method: str, params: dict[str, str], kind: str) -> dict[str, Any]:
        """Request one URL that returns a document (answer, action, redirect, transfer); record the step."""
        status, content_type, text = self.player._fetch_answer(self.session, method, url, params)
        step = {
            "index": len(self.record["steps"]),
            "kind": kind,
            "url": url,
            "method": method.upper(),
            "params": dict(params),
            "status": status,
            "xml": text if status else None,
            "error": None if status else text,
            "heard": [],
            "inputs": [],
            "_content_type": content_type,
        }
        self.record["steps"].append(step)
        self.step = step
        return step

    def _interrupt(self) -> tuple[str, str, dict[str, str], str] | None:
        """Between verbs: a hangup requested through the API, a scripted hangup, or a pending transfer."""
        live = self.live
        with self.player._lock:
            if live.hangup_requested:
                raise Ended("normal", "API Request")
            transfer, live.transfer = live.transfer, None
        if self.deadline is not None and self.seconds >= self.deadline[0]:
            raise Ended("normal", self.deadline[1])
        if transfer is not None:
            self.record["transfers"].append({"url": transfer[0], "method": transfer[1]})
            return transfer[0], transfer[1], self._params(Event="Transfer"), "Transfer"
        return None

    def _params(self, **extra: str) -> dict[str, str]:
        return {**self.base, "CallStatus": "in-progress", **extra}

    # -- the verbs -----------------------------------------------------------------------------------------
    def _walk(self, root) -> tuple[str, str, dict[str, str], str] | None:
        for verb in root:
            interrupt = self._interrupt()
            if interrupt is not None:
                return interrupt
            following = self._verb(verb)
            if following is not None:
                return following
        return None

    def _event(self, event: dict[str, Any]) -> None:
        self.record["events"].append(event)

    def _speak(self, element) -> None:
        text = _text_of(element)
        self.record["spoken"].append(text)
        if self.step is not None:
            self.step["heard"].append(text)
        self._event(
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
        self.record["played"].append(url)
        self._event({"verb": "Play", "url": url})
        self.seconds += 5.0

    def _wait(self, element) -> None:
        length = element.get("length", "1")
        self._event({"verb": "Wait", "length": length})
        self.seconds += float(length) if length.replace(".", "", 1).isdigit() else 1.0

    def _media(self, element) -> None:
        {"Speak": self._speak, "Play": self._play, "Wait": self._wait}[element.tag](element)

    def _verb(self, verb) -> tuple[str, str, dict[str, str], str] | None:
        tag = verb.tag
        if tag in ("Speak", "Play", "Wait"):
            self._media(verb)
        elif tag in ("GetDigits", "GetInput"):
            return self._prompt(verb)
        elif tag == "PreAnswer":
            for child in verb:
                following = self._verb(child)
                if following is not None:
                    return following
        elif tag == "Hangup":
            hangup = {"reason": verb.get("reason"), "schedule": verb.get("schedule")}
            self.record["hangup"] = hangup
            self._event({"verb": "Hangup", **hangup})
            schedule = verb.get("schedule")
            if schedule and schedule.isdigit() and int(schedule) > 0:
                self.deadline = (self.seconds + int(schedule), "Answer XML")
            else:
                raise Ended("normal", "Answer XML")
        elif tag == "Redirect":
            url = (verb.text or "").strip()
            method = verb.get("method", "POST")
            self._event({"verb": "Redirect", "url": url, "method": method})
            return url, method, self._params(Event="Redirect"), "Redirect"
        elif tag == "Record":
            return self._record_verb(verb)
        elif tag == "Dial":
            return self._dial(verb)
        else:
            self._event({"verb": tag, "text": _text_of(verb), "attributes": dict(verb.attrib)})
        return None

    def _next_input(self) -> dict[str, Any]:
        return self.inputs.pop(0) if self.inputs else {"kind": "silence"}

    def _action(self, verb, params: dict[str, str], kind: str) -> tuple[str, str, dict[str, str], str] | None:
        """Request `verb`'s action: as the next document (redirect=true), or only notify (redirect=false)."""
        action = verb.get("action")
        if not action:
            return None
        method = verb.get("method", "POST")
        if verb.get("redirect", "true").lower() != "false":
            return action, method, params, kind
        current = self.step
        step = self._request(action, method, params, f"{kind} (redirect=false)")
        step.pop("_content_type", None)
        self.step = current
        return None

    def _prompt(self, verb) -> tuple[str, str, dict[str, str], str] | None:
        tag = verb.tag
        input_type = verb.get("inputType", "dtmf speech") if tag == "GetInput" else "dtmf"
        prompt = {
            "verb": tag,
            "action": verb.get("action"),
            "num_digits": verb.get("numDigits"),
            "valid_digits": verb.get("validDigits"),
            "input_type": verb.get("inputType"),
            "prompts": [],
        }
        retries = verb.get("retries", "1") if tag == "GetDigits" else "1"
        tries = max(1, int(retries)) if retries.isdigit() else 1
        for _ in range(tries):
            self._event(prompt)
            before = len(self.record["events"])
            for child in verb:
                self._media(child)
            prompt["prompts"].extend(self.record["events"][before:])
            del self.record["events"][before:]
            item = self._next_input()
            heard = {"prompt": tag, **item}
            self.record["digits"].append({k: v for k, v in prompt.items() if k != "prompts"})
            if item["kind"] == "hangup":
                self._note_input(heard)
                raise Ended("normal", "Callee")
            if not accepts(tag, input_type, item):
                heard["heard_by_prompt"] = False
                self._note_input(heard)
                self.seconds += float(verb.get("timeout", verb.get("executionTimeout", "5")) or 5)
                prompt = {**prompt, "prompts": []}
                continue
            if item["kind"] == "digits":
                digits = item["digits"]
                finish = verb.get("finishOnKey", "#")
                if finish and finish in digits:
                    digits = digits.split(finish, 1)[0]
                num = verb.get("numDigits")
                if num and num.isdigit():
                    digits = digits[: int(num)]
                valid = verb.get("validDigits")
                if valid and any(ch not in valid for ch in digits):
                    heard["invalid"] = True
                    self._note_input(heard)
                    sound = verb.get("invalidDigitsSound")
                    if sound:
                        self._event({"verb": "Play", "url": sound})
                    prompt = {**prompt, "prompts": []}
                    continue
                heard["digits"] = digits
                self._note_input(heard)
                params = self._params(Digits=digits)
                if tag == "GetInput":
                    params["InputType"] = "dtmf"
            else:
                self._note_input(heard)
                params = self._params(
                    InputType="speech",
                    Speech=item["speech"],
                    SpeechConfidenceScore=f"{item['confidence']:.2f}",
                )
            self.seconds += 1.0
            return self._action(verb, params, tag)
        return None  # no (valid) input: Plivo goes on with the next verb

    def _note_input(self, heard: dict[str, Any]) -> None:
        self.record["inputs"].append(heard)
        if self.step is not None:
            self.step["inputs"].append(heard)

    def _record_verb(self, verb) -> tuple[str, str, dict[str, str], str] | None:
        seconds = float(self.script.get("record_seconds", 5))
        max_length = verb.get("maxLength", "60")
        if max_length.isdigit():
            seconds = min(seconds, float(max_length))
        recording_id = _new_uuid()
        start_ms = int(self.live.started.timestamp() * 1000 + self.seconds * 1000)
        self.seconds += seconds
        url = f"https://media.plivo.com/v1/Account/{self.player.auth_id}/Recording/{recording_id}.mp3"
        self._event({"verb": "Record", "recording_id": recording_id, "seconds": seconds, "url": url})
        self.record["recordings"].append({"recording_id": recording_id, "url": url, "seconds": seconds})
        params = self._params(
            RecordUrl=url,
            RecordingDuration=str(int(seconds)),
            RecordingDurationMs=str(int(seconds * 1000)),
            RecordingStartMs=str(start_ms),
            RecordingEndMs=str(start_ms + int(seconds * 1000)),
            RecordingID=recording_id,
        )
        return self._action(verb, params, "Record")

    def _dial(self, verb) -> tuple[str, str, dict[str, str], str] | None:
        targets = [_text_of(child) for child in verb]
        status = self.dials.pop(0) if self.dials else "completed"
        b_leg = _new_uuid() if status == "completed" else ""
        self._event({"verb": "Dial", "targets": targets, "dial_status": status, "b_leg_uuid": b_leg})
        if status == "completed":
            self.seconds += 10.0
        cause = {
            "completed": "NORMAL_CLEARING",
            "busy": "USER_BUSY",
            "no-answer": "NO_ANSWER",
            "timeout": "NO_ANSWER",
            "failed": "DESTINATION_OUT_OF_ORDER",
        }[status]
        params = self._params(
            DialStatus=status,
            DialRingStatus="true" if status in ("completed", "no-answer", "timeout") else "false",
            DialHangupCause=cause,
            DialALegUUID=self.live.call_uuid,
            DialBLegUUID=b_leg,
            DialAction="hangup",
        )
        return self._action(verb, params, "Dial")


class CallPlayer:
    """Plays the calls a PlivoSimulator accepted (mixed into it; uses its knobs and records)."""

    auth_id: str
    auth_token: str
    answer_timeout: float
    ring_seconds: float
    max_steps: int
    transfer_wait: float
    heard: list[dict[str, Any]]
    by_request: dict[str, LiveCall]
    _stopping: Any
    _lock: Any

    def _record(self, target: list[dict[str, Any]], item: dict[str, Any]) -> None:
        raise NotImplementedError

    def _say(self, message: str) -> None:
        raise NotImplementedError

    def _finish(self, live: LiveCall, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def _lose_hangup(self, live: LiveCall) -> bool:
        raise NotImplementedError

    def _play_safely(self, call: dict[str, Any]) -> None:
        try:
            self._play(call)
        except Exception as exc:  # noqa: BLE001 - a dev tool must keep serving and say what went wrong
            live = self.by_request.get(call["request_uuid"])
            if live is not None:
                with self._lock:
                    live.state = "completed"
            self._record(
                self.heard,
                {
                    "to": call["to"],
                    "request_uuid": call["request_uuid"],
                    "call_uuid": call.get("call_uuid"),
                    "spoken": [],
                    "events": [],
                    "steps": [],
                    "error": f"simulator error: {exc!r}",
                },
            )
            self._say(f"plivo-sim: playing call to {call['to']} failed: {exc!r}")

    def _signed_request(self, session, method: str, url: str, params: dict[str, str]):
        nonce = str(secrets.randbelow(10**20))
        method = method.upper()
        url = url.split("#", 1)[0]
        signature = sign_v3(self.auth_token, method, url, params, nonce)
        headers = {
            "X-Plivo-Signature-V3": signature,
            "X-Plivo-Signature-Ma-V3": signature,
            "X-Plivo-Signature-V3-Nonce": nonce,
            "User-Agent": "PlivoSimulator",
        }
        if method == "GET":
            parts = urlsplit(url)
            query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
            target = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
            return session.get(target, headers=headers, timeout=(2.0, self.answer_timeout))
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return session.post(url, data=params, headers=headers, timeout=(2.0, self.answer_timeout))

    def _fetch_answer(self, session, method: str, url: str, params: dict[str, str]) -> tuple[int, str, str]:
        """Request an answer/action URL like Plivo: up to 3 tries on connection errors and 5xx."""
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

    def _notify(self, session, method: str, url: str, params: dict[str, str]) -> dict[str, Any]:
        """A callback whose reply Plivo does not act on (machine detection, hangup): one try."""
        import requests

        sent: dict[str, Any] = {"url": url, "method": method.upper(), "params": dict(params), "status": None}
        try:
            reply = self._signed_request(session, method, url, params)
        except requests.RequestException as exc:
            sent["error"] = f"{type(exc).__name__}: {exc}"
        else:
            sent["status"] = reply.status_code
        return sent

    # -- machine detection ---------------------------------------------------------------------------------
    def _machine_wanted(self, live: LiveCall) -> bool:
        body = live.call["body"]
        detection = str(body.get("machine_detection") or "").lower()
        return live.script["answer"] == "machine" and detection in ("true", "hangup")

    def _machine_detection(self, flow: Flow) -> None:
        """Plivo detected a machine while the answer XML starts: tell machine_detection_url (asynchronous
        mode), then hang up (`hangup`) or go on, giving the app `transfer_wait` s to transfer (`true`)."""
        live, body = flow.live, flow.live.call["body"]
        if_machine = "hangup" if str(body["machine_detection"]).lower() == "hangup" else "continue"
        flow.record["machine"] = True
        detection: dict[str, Any] = {"if_machine": if_machine, "sent": None}
        flow.record["machine_detection"] = detection
        url = body.get("machine_detection_url")
        if url:
            params = {
                key: flow.base[key]
                for key in ("From", "To", "RequestUUID", "ALegRequestUUID", "CallUUID", "ALegUUID")
            }
            params.update({k: v for k, v in flow.base.items() if k.startswith("X-PH-")})
            params.update(
                Machine="true",
                IfMachine=if_machine,
                Direction="outbound",
                Event="MachineDetection",
                CallStatus="in-progress",
            )
            method = str(body.get("machine_detection_method") or "POST")
            live.wake.clear()
            detection["sent"] = self._notify(flow.session, method, url, params)
        if if_machine == "hangup":
            raise Ended("machine", "Plivo")
        if url and self.transfer_wait > 0:
            live.wake.wait(self.transfer_wait)

    # -- one call ------------------------------------------------------------------------------------------
    def _wait_phase(self, live: LiveCall, state: str, seconds: float) -> bool:
        """Stay `state` for `seconds`; False when a hangup was requested meanwhile (the call is cancelled)."""
        with self._lock:
            live.state = state
            if live.hangup_requested:
                return False
        if seconds > 0:
            live.wake.wait(seconds)
        with self._lock:
            return not live.hangup_requested

    def _play(self, call: dict[str, Any]) -> None:
        import requests

        live = self.by_request[call["request_uuid"]]
        script = live.script
        body = call["body"]
        to = call["to"]
        headers, _ = parse_sip_headers(body.get("sip_headers"))
        call_uuid = live.call_uuid
        base: dict[str, str] = {
            "From": body["from"],
            "To": to,
            "CallUUID": call_uuid,
            "RequestUUID": call["request_uuid"],
            "ALegUUID": call_uuid,
            "ALegRequestUUID": call["request_uuid"],
            "Direction": "outbound",
            "BillRate": f"{RATE_PER_MINUTE:.5f}",
            "ParentAuthID": self.auth_id,
        }
        if body.get("caller_name"):
            base["CallerName"] = str(body["caller_name"])
        base.update({f"X-PH-{name}": value for name, value in headers.items()})
        record: dict[str, Any] = {
            "to": to,
            "from": body["from"],
            "request_uuid": call["request_uuid"],
            "call_uuid": call_uuid,
            "headers": headers,
            "script": script,
            "answer_url": body["answer_url"],
            "answer_status": None,
            "answer_xml": None,
            "spoken": [],
            "played": [],
            "digits": [],
            "inputs": [],
            "recordings": [],
            "steps": [],
            "transfers": [],
            "machine": False,
            "machine_detection": None,
            "hangup": None,
            "events": [],
            "error": None,
            "call_status": None,
            "hangup_cause": None,
            "hangup_cause_name": None,
            "hangup_cause_code": None,
            "hangup_source": None,
            "duration": 0,
            "fallback_used": False,
            "hangup_url": body.get("hangup_url"),
            "hangup_params": None,
            "hangup_status": None,
            "hangup_error": None,
            "hangup_lost": False,
        }
        answer = script["answer"]
        duration = 0
        with requests.Session() as session:
            if not self._wait_phase(live, "queued", float(script.get("queued_seconds") or 0)) or not (
                self._wait_phase(live, "ringing", self.ring_seconds + float(script.get("ring_seconds") or 0))
            ):
                status, cause, source = "cancel", "canceled", "API Request"
            elif answer in UNANSWERED:
                status, cause, source = UNANSWERED[answer]
                if answer == "decline" and script.get("call_status"):
                    status = script["call_status"]
            else:
                status = "completed"
                live.answered = datetime.now(UTC)
                with self._lock:
                    live.state = "in-progress"
                answer_time = _time_text(live.answered)
                base["SessionStart"] = answer_time
                params = {**base, "Event": "StartApp", "CallStatus": "in-progress"}
                fallback = None
                if body.get("fallback_url"):
                    fallback = (body["fallback_url"], str(body.get("fallback_method") or "POST"))
                flow = Flow(self, session, live, base, record)
                try:
                    flow.run(body["answer_url"], str(body.get("answer_method") or "POST"), params, fallback)
                except Ended as end:
                    cause, source = end.cause, end.source
                duration = max(1, int(math.ceil(flow.seconds)))
            with self._lock:
                live.state = "completed"
            hangup_cause, cause_name, cause_code = CAUSES[cause]
            end_time = (live.answered or datetime.now(UTC)) + timedelta(seconds=duration)
            record.update(
                call_status=status,
                hangup_cause=hangup_cause,
                hangup_cause_name=cause_name,
                hangup_cause_code=cause_code,
                hangup_source=source,
                duration=duration,
                start_time=_time_text(live.started),
                answer_time=_time_text(live.answered) if live.answered else "",
                end_time=_time_text(end_time),
            )
            params = {
                **{k: v for k, v in base.items() if k != "SessionStart"},
                "Event": "Hangup",
                "CallStatus": status,
                "HangupCause": hangup_cause,
                "HangupCauseName": cause_name,
                "HangupCauseCode": cause_code,
                "HangupSource": source,
                "Duration": str(duration),
                "BillDuration": str(duration),
                "TotalCost": f"{RATE_PER_MINUTE * _billed(duration) / 60:.5f}",
                "StartTime": record["start_time"],
                "AnswerTime": record["answer_time"],
                "EndTime": record["end_time"],
                "STIRVerification": "Not Applicable",
            }
            record["hangup_params"] = params
            self._finish(live, record)
            hangup_url = body.get("hangup_url")
            if hangup_url and not self._stopping.is_set():
                if self._lose_hangup(live):
                    record["hangup_lost"] = True
                else:
                    sent = self._notify(session, str(body.get("hangup_method") or "POST"), hangup_url, params)
                    record["hangup_status"] = sent["status"]
                    record["hangup_error"] = sent.get("error")
        for step in record["steps"]:
            step.pop("_content_type", None)
        self._record(self.heard, record)
        self._say(f"plivo-sim: call to {to} {status} ({cause_name}); heard {record['spoken']!r}")


def _billed(duration: int) -> int:
    """Seconds billed: whole billing increments, none for an unanswered call."""
    return 0 if duration <= 0 else BILLING_INCREMENT * math.ceil(duration / BILLING_INCREMENT)


def call_record(live: LiveCall, record: dict[str, Any], auth_id: str) -> dict[str, Any]:
    """The completed call as Plivo's call record API returns it (no request_uuid: Plivo keeps none)."""
    answered = record["call_status"] == "completed" and live.answered is not None
    duration = record["duration"] if answered else 0
    billed = _billed(duration)
    state = {
        "completed": "ANSWER",
        "busy": "BUSY",
        "no-answer": "NO_ANSWER",
        "timeout": "NO_ANSWER",
        "cancel": "CANCEL",
        "failed": "FAILED",
    }[record["call_status"]]
    end = datetime.strptime(record["end_time"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    return {
        "api_id": _new_uuid(),
        "call_uuid": live.call_uuid,
        "parent_call_uuid": None,
        "call_direction": "outbound",
        "call_state": state,
        "from_number": record["from"],
        "to_number": record["to"],
        "initiation_time": _record_time(live.started),
        "answer_time": _record_time(live.answered) if answered else None,
        "end_time": _record_time(end),
        "call_duration": duration,
        "bill_duration": duration,
        "billed_duration": billed,
        "total_rate": f"{RATE_PER_MINUTE:.5f}",
        "total_amount": f"{RATE_PER_MINUTE * billed / 60:.5f}",
        "hangup_cause_code": int(record["hangup_cause_code"]),
        "hangup_cause_name": record["hangup_cause_name"],
        "hangup_source": record["hangup_source"],
        "stir_verification": "Not Applicable",
        "stir_attestation": None,
        "resource_uri": f"/v1/Account/{auth_id}/Call/{live.call_uuid}/",
    }

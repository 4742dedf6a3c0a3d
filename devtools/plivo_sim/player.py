"""Plivo's side of each accepted call: request the answer URL (signed V3, Plivo's parameters plus
`X-PH-*`), check the XML against the simulator's own copy of the Plivo XML grammar, record what the
caller would hear, and send the hangup callback with the CallStatus chosen for the destination."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from devtools.events import sign_v3
from devtools.plivo_sim.call_api import _new_uuid, parse_sip_headers

MAX_ANSWER_XML = 100 * 1024
# Hangup cause Plivo reports for each final CallStatus (name, code).
HANGUP_CAUSES = {
    "completed": ("NORMAL_CLEARING", "4000"),
    "busy": ("USER_BUSY", "3010"),
    "no-answer": ("NO_ANSWER", "3000"),
    "timeout": ("NO_ANSWER", "3000"),
    "failed": ("CALL_REJECTED", "3020"),
    "cancel": ("ORIGINATOR_CANCEL", "2000"),
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


def _answer_problem(status: int, content_type: str, text: str) -> str | None:
    if status == 0:
        return f"answer URL unreachable: {text}"
    if status != 200:
        return f"answer URL returned HTTP {status}"
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind not in ("application/xml", "text/xml"):
        return f"answer URL returned Content-Type {content_type!r}, expected application/xml"
    return None


class CallPlayer:
    """Plays the calls a PlivoSimulator accepted (mixed into it; uses its knobs and records)."""

    auth_id: str
    auth_token: str
    answer_timeout: float
    _stopping: Any

    def _record(self, target: list[dict[str, Any]], item: dict[str, Any]) -> None:
        raise NotImplementedError

    def _say(self, message: str) -> None:
        raise NotImplementedError

    def _final_status(self, to: str) -> str:
        raise NotImplementedError

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

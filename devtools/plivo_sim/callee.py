"""What the simulated callee does (its script), and the hangup information Plivo reports for each ending.

A script is plain JSON, so it can be set in process (`sim.set_callee(number, script)`) or over HTTP
(`POST /__sim/callees`). Pure functions only: parse and check a script, take the callee's next input.

Script keys (all optional):
- `answer`: `answer` (default) | `busy` | `no-answer` | `timeout` | `decline` | `failed` | `machine`.
- `inputs`: what the callee does at each successive GetDigits/GetInput prompt, in order; each item is
  `"1"`/`"12#"` (digits), `"say:yes please"` (speech), `"silence"`, `"hangup"` (hangs up at that prompt),
  or an object `{"digits": "1"}`, `{"speech": "yes", "confidence": 0.9}`, `{"silence": true}`,
  `{"hangup": true}`. When the list runs out the callee stays silent.
- `hangup_after`: the callee hangs up once this many simulated seconds of the call have played.
- `record_seconds`: how long the callee speaks into a Record (default 5).
- `dial`: DialStatus of each Dial verb, a string or a list used in order (default `completed`).
- `call_status`: override the final CallStatus of a `decline` (default `cancel`; `busy` is the other reading).
- `ring_seconds`, `queued_seconds`: real seconds the call rings / stays queued before it is answered (or not).
- `lose_hangup`: true: the hangup callback of this call is not sent (to test the stuck-`placed` sweep).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ANSWERS = ("answer", "busy", "no-answer", "timeout", "decline", "failed", "machine")
CALL_STATUSES = ("completed", "busy", "failed", "timeout", "no-answer", "cancel")
DIAL_STATUSES = ("completed", "busy", "failed", "timeout", "no-answer")
SCRIPT_KEYS = frozenset(
    {
        "answer",
        "inputs",
        "hangup_after",
        "record_seconds",
        "dial",
        "call_status",
        "ring_seconds",
        "queued_seconds",
        "lose_hangup",
    }
)
HANGUP_SOURCES = ("Caller", "Callee", "Plivo", "Carrier", "API Request", "Answer XML", "Error", "Unknown")

# (HangupCause, HangupCauseName, HangupCauseCode). 1000, 2060, 4000, 4010 and 8011 are confirmed by Plivo's
# docs (PLIVO.md); the others are the simulator's choice (Plivo documents no code for them): 3000 Busy Line,
# 3010 Rejected, 3020 No Answer, 3030 Ring Timeout, 2010 Destination Out Of Service, 4020 Machine Detected.
CAUSES: dict[str, tuple[str, str, str]] = {
    "normal": ("NORMAL_CLEARING", "Normal Hangup", "4000"),
    "end_of_xml": ("NORMAL_CLEARING", "End Of XML Instructions", "4010"),
    "busy": ("USER_BUSY", "Busy Line", "3000"),
    "rejected": ("CALL_REJECTED", "Rejected", "3010"),
    "no-answer": ("NO_ANSWER", "No Answer", "3020"),
    "timeout": ("NO_ANSWER", "Ring Timeout", "3030"),
    "failed": ("DESTINATION_OUT_OF_ORDER", "Destination Out Of Service", "2010"),
    "canceled": ("ORIGINATOR_CANCEL", "Canceled", "1000"),
    "loop": ("NORMAL_CLEARING", "Loop Detected", "2060"),
    "machine": ("NORMAL_CLEARING", "Machine Detected", "4020"),
    # v1 sent "Invalid Answer XML" as HangupCause too; kept so existing consumers see the same value.
    "invalid_xml": ("Invalid Answer XML", "Invalid Answer XML", "8011"),
}
# What an unanswered callee's ending looks like: (CallStatus, cause key, HangupSource).
UNANSWERED: dict[str, tuple[str, str, str]] = {
    "busy": ("busy", "busy", "Callee"),
    "no-answer": ("no-answer", "no-answer", "Carrier"),
    "timeout": ("timeout", "timeout", "Plivo"),
    "decline": ("cancel", "rejected", "Callee"),
    "failed": ("failed", "failed", "Carrier"),
}
# v1's CallStatus rules (status_by_suffix / status_script) expressed as a callee answer.
ANSWER_OF_STATUS = {
    "completed": "answer",
    "busy": "busy",
    "no-answer": "no-answer",
    "timeout": "timeout",
    "failed": "failed",
    "cancel": "decline",
}


class ScriptError(ValueError):
    """A callee script the simulator cannot follow; the message says which key and why."""


def _number(script: Mapping[str, Any], key: str) -> None:
    value = script.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ScriptError(f"{key}: must be a number of seconds >= 0, not {value!r}")


def normalize_input(item: Any) -> dict[str, Any]:
    """One scripted prompt reply -> {"kind": "digits"|"speech"|"silence"|"hangup", ...}."""
    if item is None:
        return {"kind": "silence"}
    if isinstance(item, int) and not isinstance(item, bool):
        item = str(item)
    if isinstance(item, str):
        if item in ("silence", ""):
            return {"kind": "silence"}
        if item == "hangup":
            return {"kind": "hangup"}
        if item.startswith("say:"):
            return {"kind": "speech", "speech": item[4:], "confidence": 0.9}
        if all(ch in "0123456789*#" for ch in item):
            return {"kind": "digits", "digits": item}
        raise ScriptError(f"inputs: {item!r} is not digits, 'say:<words>', 'silence' or 'hangup'")
    if isinstance(item, Mapping):
        if "digits" in item:
            digits = str(item["digits"])
            if not digits or not all(ch in "0123456789*#" for ch in digits):
                raise ScriptError(f"inputs: digits must be 0-9, * and #, not {digits!r}")
            return {"kind": "digits", "digits": digits}
        if "speech" in item:
            confidence = item.get("confidence", 0.9)
            if (
                isinstance(confidence, bool)
                or not isinstance(confidence, (int, float))
                or not 0 <= confidence <= 1
            ):
                raise ScriptError(f"inputs: confidence must be between 0 and 1, not {confidence!r}")
            return {"kind": "speech", "speech": str(item["speech"]), "confidence": float(confidence)}
        if item.get("silence"):
            return {"kind": "silence"}
        if item.get("hangup"):
            return {"kind": "hangup"}
    raise ScriptError(f"inputs: cannot read {item!r}")


def parse_script(raw: Any) -> dict[str, Any]:
    """Check a callee script and return it normalized (inputs as dicts, dial as a list)."""
    if isinstance(raw, str):
        raw = {"answer": raw}
    if not isinstance(raw, Mapping):
        raise ScriptError("a callee script must be a JSON object (or an answer name)")
    unknown = set(raw) - SCRIPT_KEYS
    if unknown:
        raise ScriptError(f"unknown script key(s): {', '.join(sorted(unknown))}")
    answer = raw.get("answer", "answer")
    if answer not in ANSWERS:
        raise ScriptError(f"answer: must be one of {', '.join(ANSWERS)}, not {answer!r}")
    inputs = raw.get("inputs", [])
    if not isinstance(inputs, list):
        raise ScriptError("inputs: must be a list")
    dial = raw.get("dial", [])
    dial = [dial] if isinstance(dial, str) else list(dial)
    for status in dial:
        if status not in DIAL_STATUSES:
            raise ScriptError(f"dial: must be one of {', '.join(DIAL_STATUSES)}, not {status!r}")
    for key in ("hangup_after", "record_seconds", "ring_seconds", "queued_seconds"):
        _number(raw, key)
    call_status = raw.get("call_status")
    if call_status is not None and call_status not in CALL_STATUSES:
        raise ScriptError(f"call_status: must be one of {', '.join(CALL_STATUSES)}, not {call_status!r}")
    return {
        **dict(raw),
        "answer": answer,
        "inputs": [normalize_input(item) for item in inputs],
        "dial": dial,
    }


def parse_scripts(raw: Any) -> list[dict[str, Any]]:
    """A script, or a list of scripts used one per call in order."""
    if isinstance(raw, list):
        if not raw:
            raise ScriptError("a list of scripts must not be empty")
        return [parse_script(item) for item in raw]
    return [parse_script(raw)]


def accepts(prompt: str, input_type: str, item: Mapping[str, Any]) -> bool:
    """Whether a GetDigits/GetInput prompt hears this input (speech is not heard by GetDigits)."""
    if item["kind"] == "digits":
        return prompt == "GetDigits" or "dtmf" in input_type.split()
    if item["kind"] == "speech":
        return prompt == "GetInput" and "speech" in input_type.split()
    return False

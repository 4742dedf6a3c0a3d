"""A call job → the JSON body of Plivo's Call API request, or a JobInvalid that says what is wrong.

The body matches, field for field, what plivo-python's `client.calls.create` sends for the same call
(including the SDK's explicit defaults), so behaviour is the same as with the official SDK.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from chalicelib import sip_headers

_DIGITS = re.compile(r"[0-9]{1,20}")
_SIP_URI = re.compile(r"sips?:[^\s<>,\"]+")
_URL = re.compile(r"https?://[^\s]+")
METHODS = ("GET", "POST")
MACHINE_DETECTION = ("true", "hangup")

# plivo-python's calls.create sends these when the caller does not override them.
SDK_DEFAULTS: dict[str, Any] = {
    "answer_method": "POST",
    "ring_method": "POST",
    "hangup_method": "POST",
    "fallback_method": "POST",
    "machine_detection_time": 5000,
    "machine_detection_method": "POST",
    "ring_timeout": 120,
    "error_if_parent_not_found": False,
}


class JobInvalid(ValueError):
    """The job cannot be dialled as written; the message is stored as the job's `last_error`."""


def hangup_url(public_base_url: str, call_id: str) -> str:
    return f"{public_base_url.rstrip('/')}/hangup?call_id={quote(str(call_id), safe='')}"


def build_call_body(job: Mapping[str, Any], public_base_url: str) -> dict[str, Any]:
    """Validate the job and build the Call API body. Every problem is reported, not just the first."""
    problems: list[str] = []
    to = job.get("to")
    from_ = job.get("from")
    if not isinstance(to, str) or not (_DIGITS.fullmatch(to) or _SIP_URI.fullmatch(to)):
        problems.append(f"to {to!r} must be digits (E.164 without '+') or a sip: URI")
    if not isinstance(from_, str) or not _DIGITS.fullmatch(from_):
        problems.append(f"from {from_!r} must be digits (E.164 without '+')")
    elif to == from_:
        problems.append("to and from must differ")

    answer_url = job.get("answer_url") or f"{public_base_url.rstrip('/')}/answer"
    if not isinstance(answer_url, str) or not _URL.fullmatch(answer_url):
        problems.append(f"answer_url {answer_url!r} must be an http(s) URL")
    answer_method = job.get("answer_method") or "POST"
    if not isinstance(answer_method, str) or answer_method.upper() not in METHODS:
        problems.append(f"answer_method {answer_method!r} must be GET or POST")
    else:
        answer_method = answer_method.upper()

    problems.extend(sip_headers.header_problems(job.get("headers")))

    body: dict[str, Any] = dict(SDK_DEFAULTS)
    caller_name = job.get("caller_name")
    if caller_name not in (None, ""):
        if not isinstance(caller_name, str) or len(caller_name) > 50:
            problems.append("caller_name must be text of at most 50 characters")
        else:
            body["caller_name"] = caller_name
    for field, minimum in (("ring_timeout", 1), ("time_limit", 1)):
        if job.get(field) not in (None, ""):
            number = _whole_number(job.get(field))
            if number is None or number < minimum:
                problems.append(f"{field} {job.get(field)!r} must be a whole number of seconds >= {minimum}")
            else:
                body[field] = number
    detection = job.get("machine_detection")
    if detection not in (None, "", False):
        value = "true" if detection is True else str(detection).lower()
        if value not in MACHINE_DETECTION:
            problems.append(f"machine_detection {detection!r} must be true or hangup")
        else:
            body["machine_detection"] = value

    if problems:
        raise JobInvalid("; ".join(problems))

    body.update({
        "from": from_,
        "to": to,
        "answer_url": answer_url,
        "answer_method": answer_method,
        "hangup_url": hangup_url(public_base_url, job["call_id"]),
        "hangup_method": "POST",
    })
    encoded = sip_headers.encode(job.get("headers"))
    if encoded:
        body["sip_headers"] = encoded
    return body


def _whole_number(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None

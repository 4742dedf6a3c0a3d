"""A call job -> the JSON body of Plivo's Call API request, or a JobInvalid that says what is wrong.

The body matches, field for field, what plivo-python's `client.calls.create` sends for the same call
(including the SDK's explicit defaults). Custom SIP headers are checked here too: Plivo silently drops
pairs that break its rules, so a bad header would vanish without a trace; the job is rejected loudly instead.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import quote, unquote, urlsplit

NAME_MAX = 24
VALUE_MAX = 120
_ALNUM = re.compile(r"[A-Za-z0-9]+")


class HeaderError(ValueError):
    """A header breaks Plivo's rules; the message names the header and the rule."""


def header_problems(headers: object) -> list[str]:
    """Every rule each header breaks, in a stable order, as readable sentences (empty when valid)."""
    if headers is None:
        return []
    if not isinstance(headers, Mapping):
        return [f"headers must be a map of name to value, not {type(headers).__name__}"]
    problems: list[str] = []
    for name in sorted(headers, key=str):
        value = headers[name]
        if not isinstance(name, str) or not _ALNUM.fullmatch(name):
            problems.append(f"header name {name!r} may contain only letters A-Z, a-z and digits 0-9")
        elif len(name) > NAME_MAX:
            problems.append(f"header name {name!r} is {len(name)} characters long (at most {NAME_MAX})")
        text = _as_text(value)
        if text is None:
            problems.append(f"header {name!r} value must be text, not {type(value).__name__}")
        elif text == "":
            problems.append(f"header {name!r} value is empty")
        elif not _ALNUM.fullmatch(text):
            problems.append(
                f"header {name!r} value {text!r} may contain only letters A-Z, a-z and digits 0-9"
            )
        elif len(text) > VALUE_MAX:
            problems.append(f"header {name!r} value is {len(text)} characters long (at most {VALUE_MAX})")
    return problems


def encode(headers: Mapping[str, object] | None) -> str:
    """`Name=Value,Name2=Value2` (names sorted for a deterministic body); raises HeaderError if invalid."""
    problems = header_problems(headers)
    if problems:
        raise HeaderError("; ".join(problems))
    if not headers:
        return ""
    return ",".join(f"{name}={_as_text(headers[name])}" for name in sorted(headers))


def _as_text(value: object) -> str | None:
    """DynamoDB hands numbers back as Decimal; an integral number is an acceptable header value."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    try:
        from decimal import Decimal

        if isinstance(value, Decimal) and value == value.to_integral_value() and value >= 0:
            return str(int(value))
    except (ArithmeticError, ValueError):
        return None
    return None


_DIGITS = re.compile(r"[0-9]{1,20}")
# user@host, nothing else: URI parameters (`;`) and headers (`?`) would let a producer add to Plivo's INVITE.
_SIP_URI = re.compile(r"sips?:[^\s<>,\"@;?]+@[^\s<>,\"@;?]+")
_URL = re.compile(r"https?://[^\s]+")
_ASCII_NUMBER = re.compile(r"[0-9]{1,12}")
MAX_NUMBER = 1_000_000  # far beyond any sane attempt count or call length; keeps numbers DynamoDB-safe
MAX_EPOCH = 253_402_300_799  # 9999-12-31T23:59:59Z: a due_at beyond it is a producer's mistake
# This API's own callback routes: Plivo signs its requests to an answer_url, so an answer_url that names
# one of these would make Plivo send another job's signed callback.
OWN_CALLBACK_PATHS = ("/hangup", "/machine")
METHODS = ("GET", "POST")
MACHINE_DETECTION = ("true", "hangup")  # and `voicemail:<Template>` (v2)
VOICEMAIL = "voicemail:"
_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9]{1,64}")
_PLUS_DIGITS = re.compile(r"\+?[0-9]{1,20}")

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


def answer_url(public_base_url: str, call_id: str) -> str:
    """The default answer_url (v2): it carries `call_id`, so every step of the call knows its job."""
    return f"{public_base_url.rstrip('/')}/answer?call_id={quote(str(call_id), safe='')}"


def machine_url(public_base_url: str, call_id: str) -> str:
    return f"{public_base_url.rstrip('/')}/machine?call_id={quote(str(call_id), safe='')}"


def machine_detection_mode(value: object) -> str | None:
    """A stored `machine_detection` in its normal form (`true`, `hangup`, `voicemail:<Template>`), or
    None when it is absent or malformed. The template name keeps its case: template names are."""
    if value is True:
        return "true"
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    kind, colon, template = text.partition(":")
    if colon:
        if kind.lower() + colon == VOICEMAIL and _TEMPLATE_NAME.fullmatch(template):
            return VOICEMAIL + template
        return None
    return text.lower() if text.lower() in MACHINE_DETECTION else None


def voicemail_template(value: object) -> str | None:
    """The template of `voicemail:<Template>`, else None."""
    mode = machine_detection_mode(value)
    return mode[len(VOICEMAIL) :] if mode and mode.startswith(VOICEMAIL) else None


def normalized_to(to: object) -> str | None:
    """`to` as it is stored and sent: digits without `+` (checked by `phonenumbers`), or the SIP URI;
    None when it is neither. Raises JobInvalid for digits that are not a possible number."""
    if not isinstance(to, str):
        return None
    if _SIP_URI.fullmatch(to):
        return to
    if not _PLUS_DIGITS.fullmatch(to):
        return None
    from chalicelib.calls import numbers

    try:
        return numbers.normalize(to)
    except numbers.NumberError as exc:
        raise JobInvalid(f"to {exc}") from None


def validate_job(
    job: Mapping[str, Any], public_base_url: str | None = None, *, local: bool = False
) -> dict[str, Any]:
    """Check every field a job may carry, the same way for the launcher and the CLI, and return the
    optional ones normalised (numbers as int, method upper case). Numbers may come as int or Decimal
    (DynamoDB) or as digit strings (CLI, CSV). Raises JobInvalid naming every problem, not just the first,
    so a bad job is failed with a `last_error` the producer can act on.

    With `public_base_url` (the launcher's), an answer_url must be https unless `local` (the local stack),
    and may not name this API's /hangup or /machine."""
    from chalicelib.calls import schedule

    problems: list[str] = []
    clean: dict[str, Any] = {}
    from_ = job.get("from")
    try:
        to = normalized_to(job.get("to"))
    except JobInvalid as exc:
        problems.append(str(exc))
        to = ""
    if to is None:
        problems.append(f"to {job.get('to')!r} must be digits (E.164, with or without '+') or a sip: URI")
    elif to and to != job.get("to"):
        clean["to"] = to
    if not isinstance(from_, str) or not _DIGITS.fullmatch(from_):
        problems.append(f"from {from_!r} must be digits (E.164 without '+')")
    elif to == from_:
        problems.append("to and from must differ")

    answer_url = job.get("answer_url")
    if answer_url not in (None, ""):
        if not isinstance(answer_url, str) or not _URL.fullmatch(answer_url):
            problems.append(f"answer_url {_shown(answer_url)} must be an http(s) URL")
        elif public_base_url and not local and not answer_url.lower().startswith("https://"):
            problems.append(f"answer_url {_shown(answer_url)} must be an https URL")
        elif public_base_url and _own_callback(answer_url, public_base_url):
            problems.append(
                f"answer_url {_shown(answer_url)} may not point at this API's /hangup or /machine"
            )
        else:
            clean["answer_url"] = answer_url
    answer_method = job.get("answer_method")
    if answer_method not in (None, ""):
        if not isinstance(answer_method, str) or answer_method.upper() not in METHODS:
            problems.append(f"answer_method {answer_method!r} must be GET or POST")
        else:
            clean["answer_method"] = answer_method.upper()

    problems.extend(header_problems(job.get("headers")))
    problems.extend(data_problems(job))

    for field, parse, shape in (
        ("window", schedule.parse_window, "text like HH:MM-HH:MM"),
        ("tz", schedule.zone, "text naming an IANA time zone"),
    ):
        value = job.get(field)
        if value in (None, ""):
            continue
        if not isinstance(value, str):
            problems.append(f"{field} {_shown(value)} must be {shape}")
            continue
        try:
            parse(value)
            clean[field] = value
        except schedule.WindowError as exc:
            problems.append(str(exc))

    caller_name = job.get("caller_name")
    if caller_name not in (None, ""):
        if not isinstance(caller_name, str) or len(caller_name) > 50:
            problems.append("caller_name must be text of at most 50 characters")
        else:
            clean["caller_name"] = caller_name
    numbers = number_problems(job)
    problems.extend(numbers)
    if not numbers and job.get("max_attempts") not in (None, ""):
        clean["max_attempts"] = whole_number(job["max_attempts"])
    for field, unit in (("ring_timeout", " of seconds"), ("time_limit", " of seconds")):
        value = job.get(field)
        if value not in (None, ""):
            number = whole_number(value)
            if number is None or not 1 <= number <= MAX_NUMBER:
                problems.append(
                    f"{field} {_shown(value)} must be a whole number{unit} from 1 to {MAX_NUMBER}"
                )
            else:
                clean[field] = number
    detection = job.get("machine_detection")
    if detection not in (None, "", False):
        mode = machine_detection_mode(detection)
        if mode is None:
            problems.append(
                f"machine_detection {_shown(detection)} must be hangup, voicemail:<Template> "
                "(a template name of 1 to 64 letters and digits) or true"
            )
        else:
            clean["machine_detection"] = mode

    if problems:
        raise JobInvalid("; ".join(problems))
    return clean


DATA_MAX_BYTES = 16 * 1024  # `data` as compact UTF-8 JSON; far below DynamoDB's 400 KB item limit
_CAMPAIGN = re.compile(r"[A-Za-z0-9-]{1,64}")


def data_problems(job: Mapping[str, Any]) -> list[str]:
    """What is wrong with a job's `data` (a map of names to any text, at most 16 KB as JSON) and its
    `campaign` (`[A-Za-z0-9-]{1,64}`); empty when both are fine or absent."""
    problems: list[str] = []
    campaign = job.get("campaign")
    if campaign not in (None, "") and not (isinstance(campaign, str) and _CAMPAIGN.fullmatch(campaign)):
        problems.append(f"campaign {_shown(campaign)} must be 1 to 64 characters from A-Z, a-z, 0-9 and -")
    data = job.get("data")
    if data is None:
        return problems
    if not isinstance(data, Mapping):
        return [*problems, f"data must be a map of name to text, not {type(data).__name__}"]
    bad = False
    for name in sorted(data, key=str):
        value = data[name]
        if not isinstance(name, str) or not name:
            problems.append(f"data name {_shown(name)} must be non-empty text")
        elif not isinstance(value, str):
            problems.append(f"data {_shown(name)} value must be text, not {type(value).__name__}")
        elif not encodable(name) or not encodable(value):
            problems.append(f"data {_shown(name)} is not valid Unicode text (a lone surrogate)")
        else:
            continue
        bad = True
    if not bad:
        size = len(json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        if size > DATA_MAX_BYTES:
            problems.append(f"data is {size} bytes as JSON (at most {DATA_MAX_BYTES})")
    return problems


def encodable(text: str) -> bool:
    """False for text with lone surrogates (bytes that were not UTF-8), which DynamoDB cannot store."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def number_problems(job: Mapping[str, Any]) -> list[str]:
    """What is wrong with the numbers the launcher counts with (`attempts`, `due_at`, `max_attempts`):
    a producer may have written anything, and a claim cannot count on a string or a fraction."""
    problems: list[str] = []
    attempts = job.get("attempts")
    if attempts is not None:
        number = whole_number(attempts)
        if number is None or not 0 <= number <= MAX_NUMBER or isinstance(attempts, str):
            problems.append(f"attempts {_shown(attempts)} must be a whole number from 0 to {MAX_NUMBER}")
    max_attempts = job.get("max_attempts")
    if max_attempts not in (None, ""):
        number = whole_number(max_attempts)
        if number is None or not 1 <= number <= MAX_NUMBER:
            problems.append(
                f"max_attempts {_shown(max_attempts)} must be a whole number from 1 to {MAX_NUMBER}"
            )
    due_at = job.get("due_at")
    if due_at is not None and not _epoch(due_at):
        problems.append(f"due_at {_shown(due_at)} must be a number of epoch seconds from 0 to {MAX_EPOCH}")
    return problems


def _epoch(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        return False
    try:
        return math.isfinite(value) and 0 <= value <= MAX_EPOCH
    except (ArithmeticError, TypeError, ValueError):
        return False


def _own_callback(url: str, public_base_url: str) -> bool:
    """Does `url` name one of this API's callback routes (its /hangup or /machine, however spelt)?"""
    target, base = urlsplit(url), urlsplit(public_base_url)
    if (target.hostname or "").lower().rstrip(".") != (base.hostname or "").lower().rstrip("."):
        return False
    path = re.sub(r"/+", "/", unquote(target.path)).lower().rstrip("/")
    prefix = re.sub(r"/+", "/", unquote(base.path)).lower().rstrip("/")
    if prefix and not path.startswith(prefix + "/"):
        return False
    rest = path[len(prefix) :]
    return any(rest == own or rest.startswith(own + "/") for own in OWN_CALLBACK_PATHS)


def build_call_body(job: Mapping[str, Any], public_base_url: str, *, local: bool = False) -> dict[str, Any]:
    """Validate the job (validate_job) and build the Call API body."""
    clean = validate_job(job, public_base_url, local=local)
    body: dict[str, Any] = dict(SDK_DEFAULTS)
    for field in ("caller_name", "ring_timeout", "time_limit"):
        if field in clean:
            body[field] = clean[field]
    mode = clean.get("machine_detection")
    if mode:
        # `hangup`: Plivo hangs up on a machine by itself; `voicemail:<T>` (and v1's `true`): Plivo goes
        # on, and /machine moves the call to the voicemail step. Both report to /machine (asynchronous).
        body["machine_detection"] = "hangup" if mode == "hangup" else "true"
        body["machine_detection_url"] = machine_url(public_base_url, job["call_id"])
        body["machine_detection_method"] = "POST"
    body.update(
        {
            "from": job["from"],
            "to": clean.get("to", job["to"]),
            "answer_url": clean.get("answer_url") or answer_url(public_base_url, job["call_id"]),
            "answer_method": clean.get("answer_method", "POST"),
            "hangup_url": hangup_url(public_base_url, job["call_id"]),
            "hangup_method": "POST",
        }
    )
    encoded = encode(job.get("headers"))
    if encoded:
        body["sip_headers"] = encoded
    return body


def whole_number(value: object) -> int | None:
    """An int, an integral Decimal/float, or a string of ASCII digits → int; anything else → None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal):
        return int(value) if value.is_finite() and value == value.to_integral_value() else None
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and _ASCII_NUMBER.fullmatch(value.strip()):
        return int(value.strip())
    return None


def _shown(value: object) -> str:
    """How a bad value appears in `last_error`: DynamoDB's Decimals as plain numbers, texts quoted."""
    if isinstance(value, Decimal):
        return str(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

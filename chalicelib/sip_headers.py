"""Custom SIP headers: validate and encode them the way Plivo's `sip_headers` parameter expects.

Plivo silently drops pairs that break its rules, so a bad header would vanish without a trace; we reject
the whole job loudly before dialling instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

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

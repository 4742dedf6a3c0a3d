"""Phone numbers: the one normal form callflow stores and dials (E.164 digits without `+`), and the callee's
time zones inferred from the number.

`phonenumbers` is imported here only, on the calls side: the answer route never pays for it.
"""

from __future__ import annotations

import functools
import re

_DIGITS = re.compile(r"\+?[0-9]{1,20}")
_SEPARATORS = re.compile(r"[\s().-]")
UNKNOWN_ZONE = "Etc/Unknown"


class NumberError(ValueError):
    """Not a number Plivo could dial; the message says why."""


def normalize(text: str) -> str:
    """`+14155550123`, `14155550123` or `+1 (415) 555-0123` -> `14155550123`; NumberError when the number is
    not possible for its country (too short or too long) as `phonenumbers` judges it."""
    import phonenumbers

    compact = _SEPARATORS.sub("", text.strip())
    if not _DIGITS.fullmatch(compact):
        raise NumberError(f"{text!r} is not a phone number (digits, optionally with a leading +)")
    digits = compact.lstrip("+")
    try:
        parsed = phonenumbers.parse("+" + digits)
    except phonenumbers.NumberParseException as exc:
        raise NumberError(f"{text!r} is not a phone number: {exc}") from None
    if not phonenumbers.is_possible_number(parsed):
        raise NumberError(f"{text!r} is not a possible phone number for its country code")
    return digits


@functools.lru_cache(maxsize=4096)
def zones_for(digits: str) -> tuple[str, ...]:
    """IANA zones the number may be in (several for a country or area that spans zones); () when the number
    gives none, so the caller falls back to DEFAULT_TZ."""
    import phonenumbers
    from phonenumbers import timezone

    try:
        parsed = phonenumbers.parse("+" + digits)
    except phonenumbers.NumberParseException:
        return ()
    zones = tuple(sorted(z for z in timezone.time_zones_for_number(parsed) if z != UNKNOWN_ZONE))
    return zones

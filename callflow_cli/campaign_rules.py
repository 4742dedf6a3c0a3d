"""The text forms of campaign rules the CLI accepts (`--days mon-fri`, `--retry busy=300,900`,
`--blackout 2026-12-25`); the runtime reads the parsed values stored on the campaign."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from chalicelib.calls.campaigns import RETRY_OUTCOMES, WEEKDAYS


class CampaignError(ValueError):
    """A campaign rule is malformed; the message names the rule."""


def parse_days(text: str) -> tuple[int, ...]:
    """`mon-fri`, `sat,sun`, `mon-wed,fri` -> weekday numbers (Monday 0), sorted."""
    days: set[int] = set()
    for part in text.lower().replace(" ", "").split(","):
        first, dash, last = part.partition("-")
        if first not in WEEKDAYS or (dash and last not in WEEKDAYS):
            raise CampaignError(f"days {text!r}: use mon..sun, ranges and commas, e.g. mon-fri or sat,sun")
        start = WEEKDAYS.index(first)
        end = WEEKDAYS.index(last) if last else start
        span = (end - start) % 7
        days.update((start + i) % 7 for i in range(span + 1))
    return tuple(sorted(days))


def format_days(days: Sequence[int]) -> str:
    return ",".join(WEEKDAYS[d] for d in days)


def parse_date(text: str) -> str:
    try:
        return date.fromisoformat(text.strip()).isoformat()
    except ValueError:
        raise CampaignError(f"blackout date {text!r} must be YYYY-MM-DD") from None


def parse_retry(text: str) -> tuple[str, tuple[int, ...]]:
    """`busy=300,900` -> ("busy", (300, 900)); `machine=` -> ("machine", ()): never retry."""
    outcome, sep, delays = text.partition("=")
    outcome = outcome.strip().lower()
    if not sep or outcome not in RETRY_OUTCOMES:
        raise CampaignError(
            f"retry {text!r}: use OUTCOME=SECONDS,... with OUTCOME one of {', '.join(RETRY_OUTCOMES)}"
        )
    values: list[int] = []
    for part in delays.split(","):
        if not part.strip():
            continue
        if not part.strip().isdigit() or len(part.strip()) > 8:
            raise CampaignError(f"retry {text!r}: delays are whole seconds, e.g. busy=300,900")
        values.append(int(part.strip()))
    return outcome, tuple(values)

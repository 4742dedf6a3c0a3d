"""When a job may be dialled: calling windows in the callee's zone (DST-correct) and the delays before
the next try (retry delays after a failed call, jittered backoff after a refused request)."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_WINDOW_RE = re.compile(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*")


class WindowError(ValueError):
    """A window or time zone that cannot be understood; the message quotes it."""


@dataclass(frozen=True)
class Window:
    start: time
    end: time

    @property
    def all_day(self) -> bool:
        return self.start == self.end

    def contains(self, local: time) -> bool:
        """Is this wall-clock time inside the window (start inclusive, end exclusive)?"""
        if self.all_day:
            return True
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


def parse_window(text: str) -> Window:
    """`HH:MM-HH:MM` (24 h clock, `24:00` allowed as an end) → Window; WindowError otherwise."""
    if not isinstance(text, str):
        raise WindowError(f"calling window {text!r} is not text like HH:MM-HH:MM")
    return _parse_window(text)


@lru_cache(maxsize=256)
def _parse_window(text: str) -> Window:
    match = _WINDOW_RE.fullmatch(text)
    if not match:
        raise WindowError(f"calling window {text!r} is not HH:MM-HH:MM")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    try:
        start = time(h1, m1)
        end = time(0, 0) if (h2, m2) == (24, 0) else time(h2, m2)
    except ValueError:
        raise WindowError(f"calling window {text!r} has an impossible time") from None
    return Window(start, end)


def zone(name: str) -> ZoneInfo:
    """IANA zone by name (tzdata ships with the Lambda package); WindowError if unknown or not text."""
    if not isinstance(name, str):
        raise WindowError(f"time zone {name!r} is not text naming an IANA zone")
    return _zone(name)


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise WindowError(f"time zone {name!r} is not a known IANA zone") from None


def in_window(window: str, tz: str, instant: float) -> bool:
    """Is the epoch second `instant` inside `window` in zone `tz`?"""
    local = datetime.fromtimestamp(instant, zone(tz))
    return parse_window(window).contains(local.time().replace(tzinfo=None))


def next_opening(window: str, tz: str, instant: float) -> float:
    """`instant` itself when it is inside the window, else the epoch second of the window's next opening."""
    win = parse_window(window)
    tzinfo = zone(tz)
    local = datetime.fromtimestamp(instant, tzinfo)
    if win.contains(local.time().replace(tzinfo=None)):
        return instant
    day = local.date()
    for offset in range(0, 4):
        opening = _first_instant_at(datetime.combine(day + timedelta(days=offset), win.start), tzinfo)
        # A window lying wholly inside a DST gap does not happen that day.
        if opening > instant and win.contains(datetime.fromtimestamp(opening, tzinfo).time()):
            return opening
    raise WindowError(f"calling window {window!r} never opens")  # unreachable for a parsed window


def _first_instant_at(wall: datetime, tzinfo: ZoneInfo) -> float:
    """The first instant at which the local clock shows `wall` or later: `wall` itself (its first
    occurrence if the clocks fall back), or the end of the gap if the clocks jump over it."""
    first = wall.replace(tzinfo=tzinfo, fold=0).timestamp()
    if _local(first, tzinfo) == wall:
        return first
    # In a gap fold=0 and fold=1 land on either side of the jump; bisect for the jump itself.
    other = wall.replace(tzinfo=tzinfo, fold=1).timestamp()
    low, high = math.floor(min(first, other)), math.ceil(max(first, other))
    while high - low > 1:
        middle = (low + high) // 2
        if _local(middle, tzinfo) >= wall:
            high = middle
        else:
            low = middle
    return float(high)


def _local(instant: float, tzinfo: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(instant, tzinfo).replace(tzinfo=None)


TRANSIENT_BASE = 30.0
TRANSIENT_CAP = 900.0
# The 10th 429/5xx/refused in a row fails the job: by then it has backed off for about an hour (at most
# 75 min), long enough for a Plivo incident or a throttled destination to have cleared.
MAX_TRANSIENT_ERRORS = 10


def retry_delay(delays: Sequence[int], attempts: int) -> int:
    """Seconds to wait before attempt `attempts + 1`: RETRY_DELAYS[attempts-1], the last one repeating."""
    if not delays:
        return 0
    index = min(max(attempts, 1) - 1, len(delays) - 1)
    return int(delays[index])


def transient_delay(
    errors: int, rand: random.Random | None = None, base: float = TRANSIENT_BASE, cap: float = TRANSIENT_CAP
) -> float:
    """Backoff after the `errors`-th 429/5xx/refused in a row: exponential, capped, "equal jitter"."""
    exp: float = min(cap, base * 2.0 ** max(errors - 1, 0))
    r = (rand or random).random()
    return exp / 2 + r * exp / 2

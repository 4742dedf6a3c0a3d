"""Calling windows: the local hours in which a callee may be called, DST-correct.

A window is `HH:MM-HH:MM` in the callee's IANA zone. It may cross midnight (`20:00-02:00`); equal ends
mean "all day". Wall-clock times are what people mean, so the check uses local time, and an opening
that falls in a spring-forward gap opens at the first real instant after the gap.
"""

from __future__ import annotations

import re
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


@lru_cache(maxsize=256)
def parse_window(text: str) -> Window:
    """`HH:MM-HH:MM` (24 h clock, `24:00` allowed as an end) → Window; WindowError otherwise."""
    match = _WINDOW_RE.fullmatch(text or "")
    if not match:
        raise WindowError(f"calling window {text!r} is not HH:MM-HH:MM")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    try:
        start = time(h1, m1)
        end = time(0, 0) if (h2, m2) == (24, 0) else time(h2, m2)
    except ValueError:
        raise WindowError(f"calling window {text!r} has an impossible time") from None
    return Window(start, end)


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """IANA zone by name (tzdata ships with the Lambda package); WindowError if unknown."""
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
        # fold=0: an ambiguous opening means its first occurrence; a nonexistent one (DST gap) maps to the
        # instant just after the gap, which is when the wall clock first shows a time past the opening.
        opening = datetime.combine(day + timedelta(days=offset), win.start, tzinfo=tzinfo).timestamp()
        # A window lying wholly inside a DST gap does not happen that day.
        if opening > instant and win.contains(datetime.fromtimestamp(opening, tzinfo).time()):
            return opening
    raise WindowError(f"calling window {window!r} never opens")  # unreachable for a parsed window


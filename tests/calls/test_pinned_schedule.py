"""Pinned behaviour of chalicelib.calls.schedule: calling windows (SPEC "The launcher", DST-correct, in the
callee's zone) and the delays before the next try. Exact values, so a changed comparison, bound or
constant fails a test (see `make mutation`)."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from chalicelib.calls import schedule

BERLIN = ZoneInfo("Europe/Berlin")


def at(zone, *args) -> float:
    return datetime(*args, tzinfo=zone).timestamp()


def utc(*args) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def wall(instant: float, zone=BERLIN) -> datetime:
    return datetime.fromtimestamp(instant, zone).replace(tzinfo=None)


# --- parsing ---------------------------------------------------------------------------------------


def test_parse_window_values():
    assert schedule.parse_window("08:00-21:00") == schedule.Window(time(8, 0), time(21, 0))
    assert schedule.parse_window(" 8:05 - 9:30 ") == schedule.Window(time(8, 5), time(9, 30))
    assert schedule.parse_window("00:00-00:00").all_day
    assert not schedule.parse_window("08:00-21:00").all_day


def test_24_00_is_midnight_as_an_end():
    assert schedule.parse_window("08:00-24:00") == schedule.Window(time(8, 0), time(0, 0))
    assert schedule.parse_window("00:00-24:00").all_day


@pytest.mark.parametrize("text", ["24:00-08:00", "08:00-24:01", "08:60-09:00", "25:00-26:00", "08:00-23:60"])
def test_impossible_times_are_window_errors_quoting_the_text(text):
    with pytest.raises(schedule.WindowError) as caught:
        schedule.parse_window(text)
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize("text", ["08:00–21:00", "8-21", "08:00-21", "", "08:00-21:00x", "008:00-09:00"])
def test_malformed_windows_are_window_errors_quoting_the_text(text):
    with pytest.raises(schedule.WindowError) as caught:
        schedule.parse_window(text)
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize("value", [None, 800, ["08:00-21:00"]])
def test_non_text_window_and_zone_are_window_errors(value):
    with pytest.raises(schedule.WindowError) as caught:
        schedule.parse_window(value)
    assert repr(value) in str(caught.value)
    with pytest.raises(schedule.WindowError) as caught:
        schedule.zone(value)
    assert repr(value) in str(caught.value)


@pytest.mark.parametrize("name", ["America/New York", "Mars/Olympus", "", "../etc/passwd", "UTC\x00"])
def test_unknown_zones_are_window_errors_quoting_the_name(name):
    with pytest.raises(schedule.WindowError) as caught:
        schedule.zone(name)
    assert repr(name) in str(caught.value)


def test_zone_returns_the_iana_zone():
    assert schedule.zone("Europe/Berlin") == BERLIN
    assert isinstance(schedule.zone("UTC"), ZoneInfo)


# --- membership ------------------------------------------------------------------------------------


def test_contains_start_inclusive_end_exclusive():
    win = schedule.parse_window("08:00-21:00")
    assert win.contains(time(8, 0)) and win.contains(time(20, 59, 59))
    assert not win.contains(time(7, 59, 59)) and not win.contains(time(21, 0))


def test_contains_across_midnight():
    win = schedule.parse_window("20:00-02:00")
    assert win.contains(time(20, 0)) and win.contains(time(23, 59)) and win.contains(time(0, 0))
    assert win.contains(time(1, 59, 59))
    assert not win.contains(time(2, 0)) and not win.contains(time(19, 59, 59)) and not win.contains(time(12))


def test_all_day_contains_everything():
    win = schedule.parse_window("09:00-09:00")
    assert win.contains(time(0)) and win.contains(time(9)) and win.contains(time(8, 59))


def test_in_window_reads_the_clock_in_the_given_zone():
    noon_utc = utc(2026, 6, 1, 12, 0)  # 14:00 in Berlin, 08:00 in New York
    assert schedule.in_window("13:00-15:00", "Europe/Berlin", noon_utc)
    assert not schedule.in_window("13:00-15:00", "UTC", noon_utc)
    assert schedule.in_window("08:00-09:00", "America/New_York", noon_utc)
    assert not schedule.in_window("08:01-09:00", "America/New_York", noon_utc)


# --- next opening ----------------------------------------------------------------------------------


def test_inside_the_window_is_the_instant_itself():
    t = at(BERLIN, 2026, 6, 1, 10, 0) + 0.25
    assert schedule.next_opening("08:00-21:00", "Europe/Berlin", t) == t


def test_before_the_opening_today_opens_today():
    t = at(BERLIN, 2026, 6, 1, 6, 0)
    assert schedule.next_opening("08:00-21:00", "Europe/Berlin", t) == at(BERLIN, 2026, 6, 1, 8, 0)


def test_after_the_close_opens_tomorrow():
    t = at(BERLIN, 2026, 6, 1, 21, 0)
    assert schedule.next_opening("08:00-21:00", "Europe/Berlin", t) == at(BERLIN, 2026, 6, 2, 8, 0)


def test_a_window_across_midnight_opens_the_same_evening():
    t = at(BERLIN, 2026, 6, 1, 3, 0)
    assert schedule.next_opening("20:00-02:00", "Europe/Berlin", t) == at(BERLIN, 2026, 6, 1, 20, 0)


def test_the_zone_decides_the_opening():
    t = utc(2026, 6, 1, 5, 0)  # 07:00 Berlin, 01:00 New York
    assert schedule.next_opening("08:00-21:00", "Europe/Berlin", t) == utc(2026, 6, 1, 6, 0)
    assert schedule.next_opening("08:00-21:00", "America/New_York", t) == utc(2026, 6, 1, 12, 0)


@pytest.mark.parametrize("minute", [10, 30, 59])
def test_spring_forward_opening_east_of_utc_is_exactly_the_end_of_the_gap(minute):
    # Europe/Berlin skips 02:00-03:00 on 2026-03-29 (01:00 UTC). An opening at 02:MM that day is 03:00 CEST
    # exactly, whichever minute of the gap it names (the bisection must land on the jump itself).
    before = at(BERLIN, 2026, 3, 29, 0, 30)
    moved = schedule.next_opening(f"02:{minute:02d}-05:00", "Europe/Berlin", before)
    assert moved == utc(2026, 3, 29, 1, 0)
    assert wall(moved) == datetime(2026, 3, 29, 3, 0)
    assert isinstance(moved, float)


def test_spring_forward_opening_west_of_utc():
    ny = ZoneInfo("America/New_York")
    moved = schedule.next_opening("02:10-05:00", "America/New_York", at(ny, 2026, 3, 8, 1, 0))
    assert moved == utc(2026, 3, 8, 7, 0)  # 03:00 EDT


def test_fall_back_opening_is_the_first_occurrence():
    # 02:30 happens twice in Berlin on 2026-10-25: first in CEST (00:30 UTC), then in CET (01:30 UTC).
    moved = schedule.next_opening("02:30-05:00", "Europe/Berlin", at(BERLIN, 2026, 10, 25, 0, 0))
    assert moved == utc(2026, 10, 25, 0, 30)


def test_an_opening_that_exists_that_day_is_used_not_the_next_day():
    # the opening is after the instant but the window opens the same day: offset 0 must be tried
    t = at(BERLIN, 2026, 1, 5, 7, 59, 59)
    assert schedule.next_opening("08:00-09:00", "Europe/Berlin", t) == at(BERLIN, 2026, 1, 5, 8, 0)


def test_a_window_wholly_inside_the_gap_opens_the_next_day():
    moved = schedule.next_opening("02:10-02:50", "Europe/Berlin", at(BERLIN, 2026, 3, 29, 0, 0))
    assert moved == at(BERLIN, 2026, 3, 30, 2, 10)


def test_next_opening_rejects_bad_settings():
    with pytest.raises(schedule.WindowError):
        schedule.next_opening("08:00–21:00", "UTC", 0)
    with pytest.raises(schedule.WindowError):
        schedule.next_opening("08:00-21:00", "America/New York", 0)


# --- delays ----------------------------------------------------------------------------------------


def test_retry_delay_indexes_by_attempt_and_repeats_the_last():
    delays = (300, 900, 3600)
    assert schedule.retry_delay(delays, 0) == 300
    assert schedule.retry_delay(delays, -2) == 300
    assert schedule.retry_delay(delays, 1) == 300
    assert schedule.retry_delay(delays, 2) == 900
    assert schedule.retry_delay(delays, 3) == 3600
    assert schedule.retry_delay(delays, 4) == 3600
    assert schedule.retry_delay((60,), 5) == 60
    assert schedule.retry_delay([], 2) == 0
    assert schedule.retry_delay((), 1) == 0
    assert type(schedule.retry_delay((1.9, 2), 1)) is int


class Fixed:
    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(
    "errors, exp",
    [(0, 30), (1, 30), (2, 60), (3, 120), (4, 240), (5, 480), (6, 900), (10, 900), (40, 900)],
)
def test_transient_delay_is_capped_exponential_with_equal_jitter(errors, exp):
    assert schedule.transient_delay(errors, Fixed(0.0)) == exp / 2
    assert schedule.transient_delay(errors, Fixed(0.5)) == exp * 0.75
    assert schedule.transient_delay(errors, Fixed(1.0)) == exp


def test_transient_delay_base_and_cap_can_be_given():
    assert schedule.transient_delay(3, Fixed(1.0), base=10, cap=1000) == 40
    assert schedule.transient_delay(3, Fixed(1.0), base=10, cap=25) == 25
    assert schedule.transient_delay(1, Fixed(0.0), cap=20) == 10
    assert schedule.transient_delay(2, Fixed(1.0), base=1) == 2


def test_transient_delay_defaults_to_the_module_random(monkeypatch):
    monkeypatch.setattr(schedule.random, "random", lambda: 0.25)
    assert schedule.transient_delay(1) == 15 + 0.25 * 15
    assert schedule.transient_delay(1, None) == 18.75

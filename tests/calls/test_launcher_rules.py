"""Pure rules: SIP header encoding, calling windows (DST included), retry delays."""

from __future__ import annotations

import random
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.calls import call_body, schedule

NY = ZoneInfo("America/New_York")


def ny(*args) -> float:
    return datetime(*args, tzinfo=NY).timestamp()


def local(instant: float) -> datetime:
    return datetime.fromtimestamp(instant, NY)


# --- sip_headers -------------------------------------------------------------------------------------


def test_encode_joins_name_value_pairs_with_commas():
    assert call_body.encode({"Lang": "en", "CustomerId": "C42"}) == "CustomerId=C42,Lang=en"
    assert call_body.encode({}) == ""
    assert call_body.encode(None) == ""


@pytest.mark.parametrize(
    "headers, fragment",
    [
        ({"Customer-Id": "1"}, "'Customer-Id' may contain only letters"),
        ({"Customer Id": "1"}, "'Customer Id' may contain only letters"),
        ({"A" * 25: "1"}, "is 25 characters long (at most 24)"),
        ({"Name": "v" * 121}, "value is 121 characters long (at most 120)"),
        ({"Name": "a b"}, "value 'a b' may contain only letters"),
        ({"Name": "a%20"}, "may contain only letters"),
        ({"Name": ""}, "value is empty"),
        ({"Name": True}, "value must be text"),
        (["Name=1"], "headers must be a map"),
    ],
)
def test_bad_headers_are_named_with_the_rule_they_break(headers, fragment):
    problems = call_body.header_problems(headers)
    assert any(fragment in p for p in problems), problems
    with pytest.raises(call_body.HeaderError):
        call_body.encode(headers)


def test_limits_are_inclusive():
    assert call_body.header_problems({"A" * 24: "v" * 120}) == []


@given(
    st.dictionaries(
        st.from_regex(r"[A-Za-z0-9]{1,24}", fullmatch=True),
        st.from_regex(r"[A-Za-z0-9]{1,120}", fullmatch=True),
        max_size=6,
    )
)
def test_encoding_round_trips(headers):
    encoded = call_body.encode(headers)
    decoded = dict(pair.split("=", 1) for pair in encoded.split(",")) if encoded else {}
    assert decoded == headers


# --- windows -----------------------------------------------------------------------------------------


def test_parse_window_rejects_garbage():
    for bad in ("8-21", "08:00", "25:00-26:00", "08:61-09:00", ""):
        with pytest.raises(schedule.WindowError):
            schedule.parse_window(bad)
    assert schedule.parse_window("08:00-24:00").contains(datetime(2026, 1, 1, 23, 59).time())


def test_unknown_zone_is_a_window_error():
    with pytest.raises(schedule.WindowError, match="Mars/Olympus"):
        schedule.in_window("08:00-21:00", "Mars/Olympus", 0)


def test_inside_window_is_unchanged():
    t = ny(2026, 6, 1, 12, 0)
    assert schedule.in_window("08:00-21:00", "America/New_York", t)
    assert schedule.next_opening("08:00-21:00", "America/New_York", t) == t


def test_end_is_exclusive_start_inclusive():
    assert not schedule.in_window("08:00-21:00", "America/New_York", ny(2026, 6, 1, 21, 0))
    assert schedule.in_window("08:00-21:00", "America/New_York", ny(2026, 6, 1, 8, 0))


@pytest.mark.parametrize(
    "due, expected, hours",
    [
        ((2026, 6, 1, 23, 0), (2026, 6, 2, 8, 0), 9),  # ordinary night
        ((2026, 3, 7, 23, 0), (2026, 3, 8, 8, 0), 8),  # spring forward: the night is an hour shorter
        ((2026, 10, 31, 23, 0), (2026, 11, 1, 8, 0), 10),  # fall back: an hour longer
        ((2026, 6, 2, 6, 30), (2026, 6, 2, 8, 0), 1.5),  # early morning, same day
    ],
)
def test_a_job_due_at_night_in_new_york_moves_to_eight_local(due, expected, hours):
    moved = schedule.next_opening("08:00-21:00", "America/New_York", ny(*due))
    assert local(moved).replace(tzinfo=None) == datetime(*expected)
    assert moved - ny(*due) == hours * 3600


def test_window_crossing_midnight():
    w, tz = "20:00-02:00", "America/New_York"
    assert schedule.in_window(w, tz, ny(2026, 6, 1, 23, 0))
    assert schedule.in_window(w, tz, ny(2026, 6, 2, 1, 59))
    assert not schedule.in_window(w, tz, ny(2026, 6, 2, 2, 0))
    assert local(schedule.next_opening(w, tz, ny(2026, 6, 2, 3, 0))).replace(tzinfo=None) == datetime(
        2026, 6, 2, 20, 0
    )


def test_opening_inside_the_spring_forward_gap_opens_at_the_end_of_the_gap():
    # 02:00-03:00 does not exist in New York on 2026-03-08; the first real instant inside 02:30-05:00 is
    # 03:00 EDT (not 03:30, which is what 02:30 read with the pre-jump offset gives).
    moved = schedule.next_opening("02:30-05:00", "America/New_York", ny(2026, 3, 8, 1, 0))
    assert local(moved).replace(tzinfo=None) == datetime(2026, 3, 8, 3, 0)
    assert schedule.in_window("02:30-05:00", "America/New_York", moved)
    assert not schedule.in_window("02:30-05:00", "America/New_York", moved - 1)


def test_ambiguous_opening_uses_the_first_occurrence():
    # 01:30 happens twice on 2026-11-01 in New York; the window opens at the first (EDT) one.
    moved = schedule.next_opening("01:30-05:00", "America/New_York", ny(2026, 11, 1, 0, 0))
    assert local(moved).utcoffset().total_seconds() == -4 * 3600
    assert moved - ny(2026, 11, 1, 0, 0) == 1.5 * 3600


def test_all_day_window():
    assert schedule.in_window("00:00-00:00", "UTC", 12345)


@given(
    st.floats(min_value=1.7e9, max_value=1.9e9),
    st.sampled_from(["08:00-21:00", "20:00-02:00", "02:30-03:15", "01:00-01:45"]),
    st.sampled_from(["America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kolkata"]),
)
def test_next_opening_is_in_window_and_not_before(instant, window, tz):
    moved = schedule.next_opening(window, tz, instant)
    assert moved >= instant
    assert moved - instant < 2 * 86400
    assert schedule.in_window(window, tz, moved)


# --- backoff -----------------------------------------------------------------------------------------


def test_retry_delay_uses_attempts_and_repeats_the_last():
    delays = (300, 900, 3600)
    assert [schedule.retry_delay(delays, n) for n in (1, 2, 3, 4, 9)] == [300, 900, 3600, 3600, 3600]


def test_transient_delay_grows_and_is_capped():
    rand = random.Random(1)
    values = [schedule.transient_delay(n, rand) for n in range(1, 12)]
    assert 15 <= values[0] <= 30
    assert all(v <= schedule.TRANSIENT_CAP for v in values)
    assert values[-1] >= schedule.TRANSIENT_CAP / 2


def test_window_wholly_inside_a_dst_gap_opens_the_next_day():
    london = ZoneInfo("Europe/London")
    before = datetime(2028, 3, 26, 0, 30, tzinfo=london).timestamp()  # 01:00-02:00 does not exist
    moved = schedule.next_opening("01:00-01:45", "Europe/London", before)
    assert datetime.fromtimestamp(moved, london).replace(tzinfo=None) == datetime(2028, 3, 27, 1, 0)

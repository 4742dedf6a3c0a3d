"""Pinned behaviour of chalicelib.calls.hangup.transition (SPEC "Hangup callback"): the new fields of a job
for one final hangup, computed without AWS. Each test asserts the fields it is about, not the whole dict,
so recording more per attempt (issue 10) does not break them."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from chalicelib.calls.hangup import transition
from chalicelib.settings import Settings

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp()  # 12:00 UTC = 21:00 in Tokyo
ALL_DAY = Settings(max_attempts=3, retry_delays=(300, 900, 3600), call_window="00:00-00:00", default_tz="UTC")


def placed(attempts=1, **fields):
    job = {"call_id": "a", "status": "placed", "attempts": attempts, "request_uuid": "req-1"}
    job.update(fields)
    return job


def hangup(status="busy", cause="USER_BUSY", duration="0", uuid="call-1", **extra):
    params = {"Event": "Hangup", "CallUUID": uuid, "RequestUUID": "req-1", "CallStatus": status}
    if cause is not None:
        params["HangupCause"] = cause
    if duration is not None:
        params["Duration"] = duration
    params.update(extra)
    return {k: v for k, v in params.items() if v is not None}


def test_completed_records_the_outcome_and_clears_last_error():
    changes, remove = transition(placed(), ALL_DAY, hangup("completed", "NORMAL_CLEARING", "42"), NOW)
    assert changes["status"] == "completed"
    assert remove == ("last_error",)
    assert changes["outcome"] == "completed"
    assert changes["hangup_cause"] == "NORMAL_CLEARING"
    assert changes["duration"] == 42
    assert changes["call_uuid"] == "call-1"
    assert changes["updated_at"] == NOW
    assert "last_error" not in changes and "due_at" not in changes


def test_call_status_is_trimmed_and_lower_cased():
    changes, _ = transition(placed(), ALL_DAY, hangup(" Completed "), NOW)
    assert changes["status"] == "completed" and changes["outcome"] == "completed"


@pytest.mark.parametrize("status", ["busy", "no-answer", "timeout", "BUSY"])
def test_a_retryable_outcome_before_the_last_attempt_goes_back_to_pending(status):
    changes, remove = transition(placed(attempts=1), ALL_DAY, hangup(status), NOW)
    assert changes["status"] == "pending"
    assert changes["due_at"] == NOW + 300
    assert changes["last_error"] == f"attempt 1 of 3: {status.lower()}"
    assert remove == ()


@pytest.mark.parametrize("attempts, delay", [(0, 300), (1, 300), (2, 900)])
def test_the_retry_waits_retry_delays_of_attempts_minus_one(attempts, delay):
    settings = Settings(max_attempts=5, retry_delays=(300, 900, 3600), call_window="00:00-00:00")
    changes, _ = transition(placed(attempts=attempts), settings, hangup(), NOW)
    assert changes["due_at"] == NOW + delay


def test_the_last_delay_repeats():
    settings = Settings(max_attempts=9, retry_delays=(300, 900), call_window="00:00-00:00")
    changes, _ = transition(placed(attempts=6), settings, hangup("no-answer"), NOW)
    assert changes["due_at"] == NOW + 900
    assert changes["last_error"] == "attempt 6 of 9: no-answer"


def test_the_last_attempt_busy_fails():
    changes, remove = transition(placed(attempts=3), ALL_DAY, hangup("busy"), NOW)
    assert changes["status"] == "failed"
    assert changes["last_error"] == "busy after 3 of 3 attempts"
    assert "due_at" not in changes and remove == ()


def test_max_attempts_1_then_busy_is_failed():
    changes, _ = transition(placed(attempts=1, max_attempts=1), ALL_DAY, hangup("busy"), NOW)
    assert changes["status"] == "failed"
    assert changes["last_error"] == "busy after 1 of 1 attempts"


def test_the_job_max_attempts_overrides_the_setting():
    changes, _ = transition(placed(attempts=3, max_attempts=Decimal("4")), ALL_DAY, hangup("timeout"), NOW)
    assert changes["status"] == "pending" and changes["last_error"] == "attempt 3 of 4: timeout"
    changes, _ = transition(placed(attempts=2, max_attempts="2"), ALL_DAY, hangup("timeout"), NOW)
    assert changes["status"] == "failed" and changes["last_error"] == "timeout after 2 of 2 attempts"


@pytest.mark.parametrize("stored", ["", None])
def test_no_job_max_attempts_uses_the_setting(stored):
    changes, _ = transition(placed(attempts=2, max_attempts=stored), ALL_DAY, hangup(), NOW)
    assert changes["last_error"] == "attempt 2 of 3: busy"


@pytest.mark.parametrize("stored", ["x", 0, -1, Decimal("1.5"), True])
def test_a_malformed_job_max_attempts_falls_back_to_the_setting_with_a_warning(stored, caplog):
    with caplog.at_level(logging.WARNING):
        changes, _ = transition(placed(attempts=2, max_attempts=stored), ALL_DAY, hangup(), NOW)
    assert changes["status"] == "pending" and changes["last_error"] == "attempt 2 of 3: busy"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1


def test_a_busy_retry_moves_into_the_jobs_own_tz_window():
    # due 12:05 UTC = 21:05 in Tokyo: outside 09:00-17:00 there, inside it in DEFAULT_TZ (UTC)
    settings = Settings(max_attempts=3, retry_delays=(300,), call_window="09:00-17:00", default_tz="UTC")
    changes, _ = transition(placed(tz="Asia/Tokyo"), settings, hangup(), NOW)
    tokyo = ZoneInfo("Asia/Tokyo")
    assert changes["due_at"] == datetime(2026, 6, 2, 9, 0, tzinfo=tokyo).timestamp()


def test_the_default_window_applies_in_default_tz_for_a_job_without_tz():
    settings = Settings(
        max_attempts=3, retry_delays=(300,), call_window="09:00-17:00", default_tz="Asia/Tokyo"
    )
    changes, _ = transition(placed(), settings, hangup(), NOW)
    assert changes["due_at"] == datetime(2026, 6, 2, 9, 0, tzinfo=ZoneInfo("Asia/Tokyo")).timestamp()
    settings = Settings(max_attempts=3, retry_delays=(300,), call_window="09:00-17:00", default_tz="UTC")
    changes, _ = transition(placed(), settings, hangup(), NOW)
    assert changes["due_at"] == NOW + 300  # 12:05 UTC is inside 09:00-17:00 UTC


def test_the_jobs_own_window_overrides_call_window():
    changes, _ = transition(placed(window="13:00-14:00"), ALL_DAY, hangup(), NOW)
    assert changes["due_at"] == datetime(2026, 6, 1, 13, 0, tzinfo=UTC).timestamp()


def test_a_bad_stored_window_keeps_the_plain_delay():
    changes, _ = transition(placed(window="9-5"), ALL_DAY, hangup(), NOW)
    assert changes["status"] == "pending" and changes["due_at"] == NOW + 300
    changes, _ = transition(placed(tz="Mars/Olympus"), ALL_DAY, hangup(), NOW)
    assert changes["due_at"] == NOW + 300


@pytest.mark.parametrize("status", ["failed", "cancel", "in-progress"])
def test_other_outcomes_fail_with_the_cause(status):
    changes, remove = transition(placed(), ALL_DAY, hangup(status, "CALL_REJECTED"), NOW)
    assert changes["status"] == "failed" and remove == ()
    assert changes["last_error"] == f"call ended {status}: CALL_REJECTED"
    assert changes["outcome"] == status


def test_a_failure_without_a_cause_says_so():
    changes, _ = transition(placed(), ALL_DAY, hangup("failed", cause=None), NOW)
    assert changes["last_error"] == "call ended failed: no hangup cause"
    assert changes["hangup_cause"] == ""
    changes, _ = transition(placed(), ALL_DAY, hangup("failed", cause=""), NOW)
    assert changes["last_error"] == "call ended failed: no hangup cause"


def test_a_missing_call_status_is_recorded_as_missing():
    params = {"CallUUID": "call-1", "HangupCause": "X"}
    changes, _ = transition(placed(), ALL_DAY, params, NOW)
    assert changes["outcome"] == "missing" and changes["status"] == "failed"
    assert changes["last_error"] == "call ended without CallStatus: X"


def test_missing_call_uuid_and_attempts():
    changes, _ = transition({"call_id": "a", "status": "placed"}, ALL_DAY, {"CallStatus": "busy"}, NOW)
    assert changes["call_uuid"] == "" and changes["hangup_cause"] == "" and changes["duration"] == 0
    assert changes["status"] == "pending" and changes["last_error"] == "attempt 0 of 3: busy"


@pytest.mark.parametrize(
    "duration, seconds", [("12", 12), (" 7 ", 7), ("0", 0), (None, 0), ("x", 0), ("1.5", 0), ("", 0)]
)
def test_duration_is_a_whole_number_of_seconds_or_zero(duration, seconds):
    changes, _ = transition(placed(), ALL_DAY, hangup("completed", duration=duration), NOW)
    assert changes["duration"] == seconds


def test_attempts_stored_as_decimal():
    changes, _ = transition(placed(attempts=Decimal("2")), ALL_DAY, hangup(), NOW)
    assert changes["last_error"] == "attempt 2 of 3: busy" and changes["due_at"] == NOW + 900

"""Review findings: every optional job field is checked before dialling, malformed values already stored
cannot break the hangup callback, and transient retries end."""

from __future__ import annotations

import logging
import time
from decimal import Decimal

import pytest

from chalicelib import logs
from chalicelib.calls import schedule
from chalicelib.calls.call_body import JobInvalid, validate_job
from chalicelib.calls.hangup import record_hangup
from tests.calls.launcherlib import make_job
from tests.calls.test_launcher_run import Collect, launcher_for

GOOD = {"call_id": "j", "to": "14155550100", "from": "14155559999", "headers": {"Ok": "1"}}


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"window": 123}, "window 123 must be text like HH:MM-HH:MM"),
        ({"window": ["08:00-21:00"]}, "window ['08:00-21:00'] must be text like HH:MM-HH:MM"),
        ({"window": "25:00-26:00"}, "calling window '25:00-26:00' has an impossible time"),
        ({"tz": 5}, "tz 5 must be text naming an IANA time zone"),
        ({"tz": "Mars/Olympus"}, "time zone 'Mars/Olympus' is not a known IANA zone"),
        ({"max_attempts": "three"}, "max_attempts 'three' must be a whole number from 1 to"),
        ({"max_attempts": 0}, "max_attempts 0 must be a whole number from 1 to"),
        ({"max_attempts": Decimal("2.5")}, "max_attempts 2.5 must be a whole number"),
        ({"max_attempts": True}, "max_attempts True must be a whole number"),
        ({"max_attempts": "9" * 40}, "must be a whole number from 1 to"),
        ({"ring_timeout": "\u00b3"}, "ring_timeout '³' must be a whole number"),
        ({"time_limit": -1}, "time_limit -1 must be a whole number"),
        ({"caller_name": 42}, "caller_name must be text of at most 50 characters"),
        ({"answer_url": "http:// spaced"}, "must be an http(s) URL"),
        ({"answer_method": 5}, "answer_method 5 must be GET or POST"),
        ({"machine_detection": 1}, "machine_detection 1 must be hangup, voicemail:<Template>"),
    ],
)
def test_validate_job_names_the_field_and_the_rule(changes, fragment):
    with pytest.raises(JobInvalid) as raised:
        validate_job({**GOOD, **changes})
    assert fragment in str(raised.value)


def test_validate_job_accepts_dynamodb_numbers_and_cli_strings():
    from_dynamo = validate_job(
        {
            **GOOD,
            "max_attempts": Decimal(4),
            "ring_timeout": Decimal(30),
            "time_limit": 600,
            "window": "08:00-21:00",
            "tz": "America/New_York",
        }
    )
    from_cli = validate_job(
        {
            **GOOD,
            "max_attempts": "4",
            "ring_timeout": " 30 ",
            "time_limit": "600",
            "answer_method": "get",
            "machine_detection": "HANGUP",
        }
    )
    assert from_dynamo["max_attempts"] == 4 and from_dynamo["ring_timeout"] == 30
    assert from_cli["max_attempts"] == 4 and from_cli["ring_timeout"] == 30 and from_cli["time_limit"] == 600
    assert from_cli["answer_method"] == "GET" and from_cli["machine_detection"] == "hangup"


@pytest.mark.parametrize("value", [123, Decimal(7), None, ["a"], {"a": 1}, b"08:00-09:00"])
def test_windows_reject_non_text_with_a_window_error(value):
    with pytest.raises(schedule.WindowError):
        schedule.parse_window(value)
    with pytest.raises(schedule.WindowError):
        schedule.zone(value)
    with pytest.raises(schedule.WindowError):
        schedule.next_opening(value, "UTC", 0.0)


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"window": Decimal(123)}, "window"),
        ({"max_attempts": "three"}, "max_attempts"),
        ({"max_attempts": Decimal(0)}, "max_attempts"),
        ({"tz": Decimal(5)}, "tz"),
        ({"ring_timeout": "ten"}, "ring_timeout"),
        ({"time_limit": Decimal("1.5")}, "time_limit"),
        ({"caller_name": "x" * 51}, "caller_name"),
        ({"machine_detection": "maybe"}, "machine_detection"),
    ],
)
def test_bad_optional_fields_fail_the_job_before_dialling(repo, sim, changes, field):
    repo.add(make_job("bad", **changes))
    summary = launcher_for(repo, sim.url).run()
    job = repo.get("bad")
    assert summary["failed"] == 1 and summary["skipped"] == 0
    assert job["status"] == "failed" and job["last_error"].startswith("invalid job: ")
    assert field in job["last_error"]
    assert sim.requests == []


def test_stored_malformed_max_attempts_falls_back_to_the_setting(repo, monkeypatch):
    from chalicelib.settings import Settings

    monkeypatch.setenv("MAX_ATTEMPTS", "3")
    monkeypatch.setenv("RETRY_DELAYS", "300")
    settings = Settings.from_env()
    repo.add(make_job("old", status="placed", attempts=1, request_uuid="req-1", max_attempts="three"))
    collect = Collect()
    logging.getLogger(logs.SERVICE).addHandler(collect)
    try:
        record_hangup(
            repo,
            settings,
            "old",
            {
                "CallUUID": "c1",
                "RequestUUID": "req-1",
                "CallStatus": "busy",
                "HangupCause": "USER_BUSY",
                "Event": "Hangup",
            },
            1e9,
        )
    finally:
        logging.getLogger(logs.SERVICE).removeHandler(collect)
    job = repo.get("old")
    assert job["status"] == "pending" and job["last_error"] == "attempt 1 of 3: busy"
    assert any(r.levelno == logging.WARNING and "max_attempts" in r.getMessage() for r in collect.records)


@pytest.mark.parametrize(
    "before, status",
    [(schedule.MAX_TRANSIENT_ERRORS - 2, "pending"), (schedule.MAX_TRANSIENT_ERRORS - 1, "failed")],
)
def test_transient_errors_give_up_after_the_cap(repo, sim, before, status):
    sim.script["14155550503"] = [503]
    repo.add(make_job("flaky", to="14155550503", transient_errors=before))
    summary = launcher_for(repo, sim.url).run()
    job = repo.get("flaky")
    assert job["status"] == status and job["transient_errors"] == before + 1
    assert len(sim.requests) == 1
    if status == "failed":
        assert summary["failed"] == 1
        assert job["last_error"].startswith(
            f"gave up after {schedule.MAX_TRANSIENT_ERRORS} transient errors in a row: Plivo HTTP 503"
        )
    else:
        assert summary["deferred"] == 1 and job["last_error"].startswith("Plivo HTTP 503")


def test_always_throttled_destination_ends_failed(repo, sim):
    sim.script["14155550429"] = [429] * (schedule.MAX_TRANSIENT_ERRORS + 5)
    repo.add(make_job("throttled", to="14155550429"))
    for run in range(schedule.MAX_TRANSIENT_ERRORS + 2):
        launcher_for(repo, sim.url, clock=lambda run=run: time.time() + 100_000 * (run + 1)).run()
    job = repo.get("throttled")
    assert job["status"] == "failed" and "gave up after" in job["last_error"]
    assert len(sim.requests) == schedule.MAX_TRANSIENT_ERRORS

"""The hangup recorder (record_hangup against moto) and the /hangup route through Chalice's test client."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode
from xml.etree import ElementTree

import pytest

from chalicelib import resources
from chalicelib.calls.hangup import record_hangup
from chalicelib.settings import Settings
from tests.calls.launcherlib import make_job

NOW = 1_780_000_000.0  # a Tuesday, 20:26 UTC; the tests use an all-day window


def hangup_params(status, uuid="call-1", request_uuid="req-1", cause="USER_BUSY", duration="0"):
    return {
        "CallUUID": uuid,
        "RequestUUID": request_uuid,
        "CallStatus": status,
        "HangupCause": cause,
        "Duration": duration,
        "Event": "Hangup",
        "From": "14155559999",
        "To": "14155550100",
    }


def placed(repo, call_id="a", attempts=1, **fields):
    repo.add(make_job(call_id, status="placed", attempts=attempts, request_uuid="req-1", **fields))


@pytest.fixture
def settings(monkeypatch):
    monkeypatch.setenv("RETRY_DELAYS", "300,900,3600")
    monkeypatch.setenv("MAX_ATTEMPTS", "3")
    return Settings.from_env()


def test_busy_goes_back_to_pending_with_the_first_delay(repo, settings):
    placed(repo)
    record_hangup(repo, settings, "a", hangup_params("busy"), NOW)
    job = repo.get("a")
    assert job["status"] == "pending" and job["due_at"] == NOW + 300
    assert (job["outcome"], job["hangup_cause"], job["call_uuid"]) == ("busy", "USER_BUSY", "call-1")
    assert job["duration"] == 0 and "attempt 1 of 3" in job["last_error"]


@pytest.mark.parametrize("status", ["no-answer", "timeout"])
def test_second_attempt_waits_the_second_delay(repo, settings, status):
    placed(repo, attempts=2)
    record_hangup(repo, settings, "a", hangup_params(status), NOW)
    assert repo.get("a")["status"] == "pending" and repo.get("a")["due_at"] == NOW + 900


def test_third_busy_fails(repo, settings):
    placed(repo, attempts=3)
    record_hangup(repo, settings, "a", hangup_params("busy"), NOW)
    job = repo.get("a")
    assert job["status"] == "failed" and job["last_error"] == "busy after 3 of 3 attempts"


def test_job_max_attempts_overrides_the_setting(repo, settings):
    placed(repo, attempts=3, max_attempts=5)
    record_hangup(repo, settings, "a", hangup_params("busy"), NOW)
    assert repo.get("a")["status"] == "pending" and repo.get("a")["due_at"] == NOW + 3600


def test_completed_is_completed(repo, settings):
    placed(repo)
    params = hangup_params("completed", cause="NORMAL_CLEARING", duration="42")
    record_hangup(repo, settings, "a", params, NOW)
    job = repo.get("a")
    assert (job["status"], job["outcome"], job["duration"]) == ("completed", "completed", 42)


def test_other_statuses_fail_with_the_cause(repo, settings):
    placed(repo)
    record_hangup(repo, settings, "a", hangup_params("failed", cause="UNALLOCATED_NUMBER"), NOW)
    job = repo.get("a")
    assert job["status"] == "failed" and "UNALLOCATED_NUMBER" in job["last_error"]


def test_the_same_callback_twice_changes_nothing_the_second_time(repo, settings):
    placed(repo)
    record_hangup(repo, settings, "a", hangup_params("busy"), NOW)
    first = repo.get("a")
    record_hangup(repo, settings, "a", hangup_params("busy"), NOW + 30)
    assert repo.get("a") == first


def test_a_late_callback_for_an_earlier_attempt_is_ignored(repo, settings):
    placed(repo, attempts=2)
    record_hangup(repo, settings, "a", hangup_params("busy", uuid="old", request_uuid="req-0"), NOW)
    assert repo.get("a")["status"] == "placed"


def test_retry_lands_inside_the_calling_window(repo, settings):
    placed(repo, window="08:00-21:00", tz="UTC")
    record_hangup(repo, settings, "a", hangup_params("busy"), NOW)  # 20:26 + 5 min = 20:31 UTC: inside
    assert repo.get("a")["due_at"] == NOW + 300
    placed(repo, "b", window="08:00-20:30", tz="UTC")
    record_hangup(repo, settings, "b", hangup_params("busy"), NOW)  # 20:31 is past 20:30: next morning
    assert time.gmtime(repo.get("b")["due_at"])[3:5] == (8, 0)


def test_unknown_is_settled_by_a_later_callback(repo, settings):
    repo.add(make_job("u", status="unknown", attempts=1, last_error="no reply"))
    record_hangup(repo, settings, "u", hangup_params("completed", cause="NORMAL_CLEARING"), NOW)
    job = repo.get("u")
    assert job["status"] == "completed" and "last_error" not in job


def test_callback_before_the_launcher_wrote_placed(repo, settings):
    repo.add(make_job("d", status="dialing", attempts=1))
    record_hangup(repo, settings, "d", hangup_params("busy"), NOW)
    assert repo.get("d")["status"] == "pending"
    assert not repo.mark_placed("d", NOW + 1, "req-1", "api-1", attempt=1)
    assert repo.get("d")["status"] == "pending" and repo.get("d")["request_uuid"] == "req-1"


def test_unknown_job_and_settled_jobs_are_left_alone(repo, settings):
    record_hangup(repo, settings, "nope", hangup_params("busy"), NOW)  # no exception
    repo.add(make_job("c", status="cancelled"))
    record_hangup(repo, settings, "c", hangup_params("busy"), NOW)
    assert repo.get("c")["status"] == "cancelled" and "outcome" not in repo.get("c")


def test_busy_busy_busy_through_the_launcher_and_the_simulator(repo, sim, settings):
    """Three real dials: each busy callback schedules the next, the third fails the job."""
    from chalicelib.calls.launcher import Launcher
    from chalicelib.calls.plivo_api import PlivoClient
    from tests.calls.launcherlib import AUTH_ID, AUTH_TOKEN

    repo.add(make_job("bbb", due_at=NOW - 10))
    client = PlivoClient(AUTH_ID, AUTH_TOKEN, sim.url)
    clock = NOW
    for attempt in (1, 2, 3):
        summary = Launcher(repo, client, settings, clock=lambda at=clock: at).run()
        assert summary["placed"] == 1
        job = repo.get("bbb")
        record_hangup(
            repo,
            settings,
            "bbb",
            hangup_params("busy", uuid=f"c{attempt}", request_uuid=job["request_uuid"]),
            clock,
        )
        clock = repo.get("bbb")["due_at"]
    job = repo.get("bbb")
    assert job["status"] == "failed" and job["attempts"] == 3 and len(sim.calls) == 3


# --- the route -------------------------------------------------------------------------------------


@pytest.fixture
def client(table, monkeypatch):
    monkeypatch.setenv("VERIFY_SIGNATURES", "false")
    monkeypatch.setenv("TEMPLATE_BUCKET", "unused")
    resources.reset()
    from chalice.test import Client

    from app import app

    with Client(app) as test_client:
        yield test_client


def test_route_records_and_answers_an_empty_response(client, repo):
    placed(repo)
    body = urlencode(hangup_params("completed", cause="NORMAL_CLEARING", duration="12"))
    for _ in range(2):  # Plivo repeats itself; the answer and the job stay the same
        reply = client.http.post(
            "/hangup?call_id=a", body=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert reply.status_code == 200
        root = ElementTree.fromstring(reply.body)
        assert root.tag == "Response" and len(root) == 0 and not (root.text or "").strip()
    job = repo.get("a")
    assert (job["status"], job["duration"], job["call_uuid"]) == ("completed", 12, "call-1")


def test_route_rejects_an_unsigned_callback_when_verifying(client, repo, monkeypatch):
    monkeypatch.setenv("VERIFY_SIGNATURES", "true")
    resources.reset()
    placed(repo)
    reply = client.http.post(
        "/hangup?call_id=a",
        body=json.dumps(hangup_params("busy")),
        headers={"Content-Type": "application/json"},
    )
    assert reply.status_code == 403
    assert repo.get("a")["status"] == "placed"


@pytest.mark.parametrize("next_status", ["dialing", "unknown"])
def test_an_earlier_attempts_callback_does_not_move_the_next_attempt(repo, settings, next_status):
    placed(repo, attempts=1)
    record_hangup(repo, settings, "a", hangup_params("busy", uuid="c1", request_uuid="req-1"), NOW)
    repo.table.update_item(
        Key={"call_id": "a"}, UpdateExpression="SET due_at = :d", ExpressionAttributeValues={":d": int(NOW)}
    )
    assert repo.claim("a", NOW + 400)["attempts"] == 2
    if next_status == "unknown":
        repo.release("a", NOW + 401, status="unknown", last_error="no reply", count_attempt=True)
    record_hangup(repo, settings, "a", hangup_params("busy", uuid="c1", request_uuid="req-1"), NOW + 402)
    assert repo.get("a")["status"] == next_status
    record_hangup(repo, settings, "a", hangup_params("completed", uuid="c2", request_uuid="req-2"), NOW + 403)
    job = repo.get("a")
    assert (job["status"], job["attempts"], job["call_uuid"]) == ("completed", 2, "c2")


def test_impossible_call_ids_are_unknown_jobs(repo, settings):
    for call_id in ("", "x" * 3000, "\u00e9" * 1100):
        record_hangup(repo, settings, call_id, hangup_params("busy"), NOW)  # no exception, no request
        assert repo.get(call_id) is None

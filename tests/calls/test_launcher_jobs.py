"""JobRepository against moto: the CLI's operations and the conditional transitions."""

from __future__ import annotations

import pytest

from chalicelib.calls.jobs import JobExists, JobNotFound, JobStateError
from tests.calls.launcherlib import make_job


def test_add_refuses_an_existing_call_id(repo):
    repo.add(make_job("a", due_at=100))
    with pytest.raises(JobExists, match="'a' already exists"):
        repo.add(make_job("a", due_at=200, to="14155550111"))
    assert repo.get("a")["due_at"] == 100
    assert repo.get("a")["to"] == "14155550100"


def test_get_returns_plain_values(repo):
    repo.add(make_job("a", due_at=100.5, max_attempts=4))
    job = repo.get("a")
    assert job["due_at"] == 100.5 and isinstance(job["max_attempts"], int)
    assert repo.get("missing") is None


def test_list_by_status_is_oldest_first_and_paginated(repo):
    for i in range(7):
        repo.add(make_job(f"j{i}", due_at=1000 - i))
    repo.add(make_job("done", due_at=1, status="completed"))
    pending = list(repo.query_status("pending", page_size=2))
    assert [j["call_id"] for j in pending] == [f"j{i}" for i in range(6, -1, -1)]
    assert [j["call_id"] for j in repo.list("completed")] == ["done"]
    assert len(list(repo.list())) == 8
    assert [j["call_id"] for j in repo.query_status("pending", due_before=995)] == ["j6", "j5"]


def test_cancel_only_pending(repo):
    repo.add(make_job("a"))
    repo.add(make_job("b", status="placed"))
    assert repo.cancel("a")["status"] == "cancelled"
    with pytest.raises(JobStateError, match="'b' is placed; only pending jobs can be cancelled"):
        repo.cancel("b")
    with pytest.raises(JobNotFound, match="'zzz' does not exist"):
        repo.cancel("zzz")
    assert repo.get("b")["status"] == "placed"


def test_claim_is_won_once_and_counts_the_attempt(repo):
    repo.add(make_job("a", due_at=100))
    first = repo.claim("a", now=200)
    assert first["status"] == "dialing" and first["attempts"] == 1 and first["to"] == "14155550100"
    assert repo.claim("a", now=200) is None


def test_claim_refuses_a_job_that_is_no_longer_due(repo):
    repo.add(make_job("a", due_at=500))
    assert repo.claim("a", now=400) is None
    assert repo.get("a")["status"] == "pending"


def test_release_gives_back_the_attempt_unless_the_call_may_exist(repo):
    repo.add(make_job("a", due_at=1))
    repo.add(make_job("b", due_at=1))
    repo.claim("a", 10)
    repo.claim("b", 10)
    assert repo.release(
        "a", 11, status="pending", due_at=99, last_error="Plivo HTTP 429: slow down", transient_error=True
    )
    assert repo.release("b", 11, status="unknown", last_error="timeout", count_attempt=True)
    a, b = repo.get("a"), repo.get("b")
    assert (a["status"], a["attempts"], a["due_at"], a["transient_errors"]) == ("pending", 0, 99, 1)
    assert (b["status"], b["attempts"]) == ("unknown", 1)
    assert not repo.release("a", 12, status="failed")  # not dialing any more: no change
    assert repo.get("a")["status"] == "pending"


def test_mark_placed_does_not_undo_a_faster_hangup(repo):
    repo.add(make_job("a", due_at=1))
    repo.claim("a", 10)
    assert repo.record_outcome("a", "dialing", 1, {"status": "completed", "outcome": "completed"})
    assert not repo.mark_placed("a", 12, "req-1", "api-1", attempt=1)
    job = repo.get("a")
    assert (job["status"], job["request_uuid"], job["api_id"]) == ("completed", "req-1", "api-1")


def test_expire_dialing_only_when_stale(repo):
    repo.add(make_job("a", due_at=1))
    repo.claim("a", 100)
    assert not repo.expire_dialing("a", cutoff=50, now=700, message="stale")
    assert repo.expire_dialing("a", cutoff=100, now=700, message="stale")
    assert repo.get("a")["status"] == "unknown"

"""Duplicate and out-of-order hangup callbacks: the job ends in the right state.

Callbacks are signed Plivo POSTs to the hangup_url, sent to the deployed handler as API Gateway events.
The launcher's side of each race is its real repository writes (claim, mark_placed, release) on the same
moto table, in the order a race would put them.
"""

from __future__ import annotations

import threading
import time

import pytest

from chalicelib import resources
from tests.faults.faultlib import FaultHook, dynamodb_error, invoke, key_of, make_job, signed_hangup_event

pytestmark = pytest.mark.usefixtures("aws")


def repo():
    return resources.job_repository()


def hangup(
    call_id: str, request_uuid: str, status: str, call_uuid: str | None = None, duration: int = 0
) -> dict:
    cause = {"completed": "NORMAL_CLEARING", "busy": "USER_BUSY", "no-answer": "NO_ANSWER"}.get(status, "X")
    params = {
        "CallUUID": call_uuid or f"cu-{request_uuid}",
        "RequestUUID": request_uuid,
        "CallStatus": status,
        "HangupCause": cause,
        "Duration": str(duration),
        "BillDuration": str(duration),
        "Event": "Hangup",
        "From": "14155559999",
        "To": "14155550100",
        "Direction": "outbound",
    }
    reply = invoke(signed_hangup_event(call_id, params, nonce=str(time.time_ns())))
    assert reply["statusCode"] == 200, reply
    assert "<Response/>" in reply["body"]
    return reply


def dial(call_id: str, request_uuid: str) -> None:
    """The launcher's attempt: claim, then Plivo's 201 recorded."""
    job = repo().claim(call_id, time.time())
    assert job is not None
    assert repo().mark_placed(
        call_id,
        time.time(),
        request_uuid,
        f"api-{request_uuid}",
        attempt=job["attempts"],
        request_uuids=job.get("request_uuids"),
    )


def new_job(call_id: str, **fields) -> None:
    repo().add(make_job(call_id, **fields))


def first_attempt_busy(call_id: str) -> None:
    """A new job whose attempt 1 (request r1) rang busy, its retry already due."""
    new_job(call_id)
    dial(call_id, "r1")
    hangup(call_id, "r1", "busy")
    repo().table.update_item(
        Key={"call_id": call_id},
        UpdateExpression="SET due_at = :d",
        ExpressionAttributeValues={":d": int(time.time()) - 1},
    )


def test_duplicate_completed_callbacks(env):
    new_job("dup-done")
    dial("dup-done", "r1")
    hangup("dup-done", "r1", "completed", duration=42)
    first = repo().get("dup-done")
    for _ in range(3):
        hangup("dup-done", "r1", "completed", duration=42)
    assert repo().get("dup-done") == first
    assert first["status"] == "completed" and first["outcome"] == "completed" and first["duration"] == 42
    assert first["attempts"] == 1


def test_duplicate_busy_callbacks_queue_one_retry():
    new_job("dup-busy")
    dial("dup-busy", "r1")
    before = time.time()
    hangup("dup-busy", "r1", "busy")
    first = repo().get("dup-busy")
    assert first["status"] == "pending" and first["attempts"] == 1
    assert before + 300 <= first["due_at"] <= time.time() + 300 + 1  # RETRY_DELAYS[0]
    hangup("dup-busy", "r1", "busy")
    assert repo().get("dup-busy") == first  # the retry is not pushed back, attempts not counted twice


def test_concurrent_duplicate_callbacks_apply_once(atomic_moto):
    new_job("dup-race")
    dial("dup-race", "r1")
    barrier = threading.Barrier(8)
    replies: list[int] = []

    def deliver() -> None:
        barrier.wait()
        replies.append(
            invoke(
                signed_hangup_event(
                    "dup-race",
                    {
                        "CallUUID": "cu-1",
                        "RequestUUID": "r1",
                        "CallStatus": "busy",
                        "HangupCause": "USER_BUSY",
                        "Duration": "0",
                        "Event": "Hangup",
                    },
                )
            )["statusCode"]
        )

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert replies == [200] * 8
    job = repo().get("dup-race")
    assert job["status"] == "pending" and job["attempts"] == 1 and job["outcome"] == "busy"


def test_late_callback_of_an_earlier_attempt_after_the_next_was_placed():
    first_attempt_busy("late-placed")
    dial("late-placed", "r2")
    hangup("late-placed", "r1", "busy")  # Plivo re-delivers attempt 1's callback
    job = repo().get("late-placed")
    assert job["status"] == "placed" and job["request_uuid"] == "r2", job
    hangup("late-placed", "r2", "completed", duration=9)
    job = repo().get("late-placed")
    assert job["status"] == "completed" and job["attempts"] == 2 and job["duration"] == 9


def test_late_callback_of_an_earlier_attempt_while_the_next_is_dialing():
    """Attempt 2 is claimed (dialing; the job still holds attempt 1's request_uuid) when attempt 1's busy
    callback is delivered again. It must not send the job back to pending: attempt 2 is about to ring."""
    first_attempt_busy("late-dialing")
    assert repo().claim("late-dialing", time.time())["attempts"] == 2

    hangup("late-dialing", "r1", "busy")  # the re-delivered callback of attempt 1
    assert repo().get("late-dialing")["status"] == "dialing", "an earlier attempt's callback moved the job"

    assert repo().mark_placed("late-dialing", time.time(), "r2", "api-r2", attempt=2)
    hangup("late-dialing", "r2", "completed", duration=20)
    job = repo().get("late-dialing")
    assert job["status"] == "completed" and job["request_uuid"] == "r2" and job["attempts"] == 2, job


def test_late_callback_of_an_earlier_attempt_after_the_next_became_unknown():
    """Attempt 2 timed out at Plivo (unknown: it may be ringing). Attempt 1's re-delivered busy must not
    queue a third call; attempt 2's own callback settles the job."""
    first_attempt_busy("late-unknown")
    assert repo().claim("late-unknown", time.time()) is not None
    assert repo().release(
        "late-unknown",
        time.time(),
        status="unknown",
        last_error="no reply within 10 s after sending",
        count_attempt=True,
    )

    hangup("late-unknown", "r1", "busy")
    assert repo().get("late-unknown")["status"] == "unknown", "an earlier attempt's callback re-queued it"
    hangup("late-unknown", "r2", "completed", duration=5)
    job = repo().get("late-unknown")
    assert job["status"] == "completed" and job["outcome"] == "completed" and job["attempts"] == 2, job


def test_callback_before_the_launcher_records_the_call():
    """Plivo's hangup beats the launcher's own `placed` write: the callback's state wins."""
    new_job("early")
    assert repo().claim("early", time.time()) is not None
    hangup("early", "r1", "completed", duration=3)
    assert repo().get("early")["status"] == "completed"
    repo().mark_placed("early", time.time(), "r1", "api-r1", attempt=1)
    job = repo().get("early")
    assert job["status"] == "completed" and job["request_uuid"] == "r1" and job["duration"] == 3


def test_out_of_order_final_then_earlier_busy():
    first_attempt_busy("ooo")
    dial("ooo", "r2")
    hangup("ooo", "r2", "completed", duration=7)
    done = repo().get("ooo")
    hangup("ooo", "r1", "busy")
    hangup("ooo", "r2", "busy")  # nonsense after the fact: a settled job stays settled
    assert repo().get("ooo") == done and done["status"] == "completed"


def test_last_attempt_busy_fails_once_and_stays_failed(env):
    env.setenv("MAX_ATTEMPTS", "1")
    resources.reset()
    new_job("last")
    dial("last", "r1")
    hangup("last", "r1", "busy")
    failed = repo().get("last")
    assert failed["status"] == "failed" and "busy" in failed["last_error"]
    hangup("last", "r1", "busy")
    hangup("last", "r1", "completed")
    assert repo().get("last") == failed


def _key_too_long(request):
    return dynamodb_error(
        request.url,
        400,
        "ValidationException",
        "One or more parameter values were "
        "invalid: Size of hashkey has exceeded the maximum size limit of 2048 bytes",
    )


@pytest.mark.parametrize("call_id", ["x" * 3000, "\u00e9" * 1100, "\u0000", " ", "job/../../etc"])
def test_hangup_for_an_impossible_call_id_is_acknowledged(call_id, json_logs):
    """A call_id that cannot be a job (over DynamoDB's 2048-byte key limit, odd characters) is an unknown
    job: 200 and a log line, not a 500 that has Plivo retry a callback that can never be recorded.
    In-process moto does not enforce the key limit, so DynamoDB's answer is given at the client."""
    hook = FaultHook(
        resources.dynamodb_resource().meta.client,
        "before-send.dynamodb.GetItem",
        _key_too_long,
        match=lambda request, body: len((key_of(body) or "").encode()) > 2048,
    )
    reply = invoke(signed_hangup_event(call_id, {"CallUUID": "cu", "CallStatus": "completed"}))
    assert reply["statusCode"] == 200, reply
    assert "<Response/>" in reply["body"]
    assert json_logs.at("WARNING") or json_logs.at("INFO"), "an ignored callback leaves a log line"
    if len(call_id.encode()) > 2048:
        assert hook.injected or not hook.passed  # the hook saw the lookup (or there was none)

"""DynamoDB faults during a launcher pass: throttling on the GSI query, on the claim, on the result write.

The pass is `chalicelib.handlers.launch()` (what the Lambda runs) with the app's own DynamoDB client from
`chalicelib.resources`; faults are botocore `before-send` hooks on that client answering like DynamoDB does
when throttled, after botocore's own retries. Plivo is the simulator over HTTP. Asserted from the table and
from the simulator: every job still exists, none is dialled twice, and the pass says what it did not do.
"""

from __future__ import annotations

import json
import time

import pytest

from chalicelib import handlers, resources
from chalicelib.calls import launcher
from tests.faults.faultlib import (
    FaultHook,
    call_id_of,
    dialled,
    dynamodb_error,
    invoke,
    is_claim,
    is_pending_query,
    is_result_write,
    key_of,
    make_job,
    signed_hangup_event,
)

pytestmark = pytest.mark.usefixtures("aws", "plivo_env")


def throttled(request):
    return dynamodb_error(
        request.url,
        400,
        "ProvisionedThroughputExceededException",
        "The level of configured provisioned throughput for the table was exceeded.",
    )


def throttling(request):
    return dynamodb_error(request.url, 400, "ThrottlingException", "Rate of requests exceeds the limit.")


def add_jobs(count: int, prefix: str = "job") -> list[str]:
    repo = resources.job_repository()
    ids = [f"{prefix}-{i:03d}" for i in range(count)]
    now = time.time()
    for i, call_id in enumerate(ids):
        repo.add(make_job(call_id, due_at=now - 1000 + i, to=f"1415555{i:04d}"))
    return ids


def statuses() -> dict[str, str]:
    return {job["call_id"]: job["status"] for job in resources.job_repository().list()}


def client():
    return resources.dynamodb_resource().meta.client


def launch_reporting() -> dict:
    """One pass; a pass that raises has not reported anything a scheduler can read, so that fails too."""
    try:
        return handlers.launch()
    except Exception as exc:  # noqa: BLE001 - turned into a readable test failure
        pytest.fail(f"the launcher pass raised {type(exc).__name__}: {exc} instead of reporting a summary")


def cause_mentions(lines: list[dict], *words: str) -> list[dict]:
    """Log lines whose text (message, cause, reason ...) names one of `words`."""
    return [line for line in lines if any(word in json.dumps(line) for word in words)]


@pytest.mark.slow
def test_throttled_query_on_the_second_page(sim, json_logs):
    ids = add_jobs(150)  # the pass reads 100 per page
    hook = FaultHook(
        client(),
        "before-send.dynamodb.Query",
        throttled,
        match=lambda request, body: is_pending_query(body) and "ExclusiveStartKey" in body,
    )
    summary = launch_reporting()

    assert hook.injected, "the second page was never asked for"
    counts = dialled(sim.calls)
    assert set(counts.values()) == {1}, "a job was dialled twice"
    assert len(counts) == 100 and summary["placed"] == 100
    state = statuses()
    assert sorted(state) == ids, "a job disappeared"
    assert sorted(call_id for call_id, status in state.items() if status == "pending") == ids[100:]
    assert all(state[call_id] == "placed" for call_id in counts)
    errors = cause_mentions(json_logs.at("ERROR"), "ProvisionedThroughputExceeded", "throughput")
    assert errors, f"the pass did not say it could not read the rest: {json_logs.at('ERROR')}"

    hook.remove()  # DynamoDB recovers: the next pass dials the rest, each once
    assert launch_reporting()["placed"] == 50
    assert set(dialled(sim.calls).values()) == {1} and len(sim.calls) == 150


@pytest.mark.slow
def test_throttled_stale_sweep_does_not_stop_dialling(sim, json_logs):
    """The query for stale `dialing` jobs fails: the due jobs are still dialled."""
    ids = add_jobs(10)
    hook = FaultHook(
        client(),
        "before-send.dynamodb.Query",
        throttling,
        match=lambda request, body: (
            {"S": "dialing"} in (body.get("ExpressionAttributeValues") or {}).values()
        ),
    )
    summary = launch_reporting()
    assert hook.injected
    assert summary["placed"] == 10 and sorted(dialled(sim.calls)) == ids
    assert cause_mentions(json_logs.at("ERROR"), "Throttling", "throughput")


@pytest.mark.slow
def test_throttled_claims_leave_those_jobs_pending_and_undialled(sim, json_logs):
    ids = add_jobs(30)
    blocked = set(ids[3:30:6])  # five jobs whose claim DynamoDB keeps refusing
    hook = FaultHook(
        client(),
        "before-send.dynamodb.UpdateItem",
        throttled,
        match=lambda request, body: is_claim(body) and key_of(body) in blocked,
    )
    summary = launch_reporting()

    assert {key_of(body) for body in hook.injected} == blocked
    # The run does not spin on claims DynamoDB keeps refusing: the pass after the one that placed the
    # others changed no job, so the run ended (each try is botocore's 4 attempts: 3 retries).
    assert len(hook.injected) <= 2 * 4 * len(blocked), len(hook.injected)
    counts = dialled(sim.calls)
    assert set(counts.values()) == {1} and set(counts) == set(ids) - blocked
    assert summary["placed"] == 25
    state = statuses()
    assert sorted(state) == ids
    assert {call_id for call_id, status in state.items() if status == "pending"} == blocked
    for call_id in blocked:
        job = resources.job_repository().get(call_id)
        assert int(job.get("attempts") or 0) == 0, job  # nothing was attempted, nothing is counted
    reported = {
        line.get("call_id") for line in cause_mentions(json_logs.at("ERROR"), "ProvisionedThroughput")
    }
    assert blocked <= reported, f"not every unclaimed job was reported: {reported}"

    hook.remove()
    assert launch_reporting()["placed"] == 5
    counts = dialled(sim.calls)
    assert set(counts) == set(ids) and set(counts.values()) == {1}


@pytest.mark.slow
def test_throttled_result_writes_never_redial_and_settle_later(sim, json_logs):
    ids = add_jobs(20)
    blocked = set(ids[2:20:4])  # Plivo placed these calls, but their `placed` write keeps failing
    hook = FaultHook(
        client(),
        "before-send.dynamodb.UpdateItem",
        throttled,
        match=lambda request, body: is_result_write(body) and key_of(body) in blocked,
    )
    launch_reporting()

    assert blocked <= {key_of(body) for body in hook.injected}
    counts = dialled(sim.calls)
    assert set(counts) == set(ids) and set(counts.values()) == {1}
    state = statuses()
    assert sorted(state) == ids
    assert {call_id for call_id, status in state.items() if status != "placed"} == blocked
    assert all(state[call_id] == "dialing" for call_id in blocked)  # never back to pending: no re-dial
    reported = {
        line.get("call_id") for line in cause_mentions(json_logs.at("ERROR"), "ProvisionedThroughput")
    }
    assert blocked <= reported, f"not every unrecorded call was reported: {reported}"

    hook.remove()
    assert launch_reporting()["due"] == 0  # the next run leaves them alone ...
    eleven_minutes = launcher.Launcher(
        resources.job_repository(),
        resources.plivo_client(),
        resources.settings(),
        clock=lambda: time.time() + 660,
    )
    assert eleven_minutes.run()["unknown"] == len(blocked)  # ... and a later one gives up on them
    assert {call_id for call_id, status in statuses().items() if status == "unknown"} == blocked
    assert set(dialled(sim.calls).values()) == {1} and len(sim.calls) == 20

    # Plivo's hangup callbacks still arrive (the call did happen): they settle the jobs.
    uuids = {call_id_of(call): call["request_uuid"] for call in sim.calls}
    for call_id in blocked:
        params = {
            "CallUUID": f"cu-{call_id}",
            "RequestUUID": uuids[call_id],
            "CallStatus": "completed",
            "HangupCause": "NORMAL_CLEARING",
            "Duration": "12",
            "Event": "Hangup",
        }
        assert invoke(signed_hangup_event(call_id, params))["statusCode"] == 200
    state = statuses()
    assert all(state[call_id] == "completed" for call_id in blocked), state


def test_transient_throttling_is_absorbed_by_retries(sim):
    """One throttle per request on the query, the claim and the result write: botocore retries, the pass
    places every job once."""
    ids = add_jobs(12)
    once: dict[tuple[str, str | None], bool] = {}

    def first_time(kind):
        def match(request, body):
            key = (kind, key_of(body))
            if key in once:
                return False
            once[key] = True
            return True

        return match

    hooks = [
        FaultHook(client(), "before-send.dynamodb.Query", throttling, match=first_time("query")),
        FaultHook(
            client(),
            "before-send.dynamodb.UpdateItem",
            throttled,
            match=lambda r, b: (
                (is_claim(b) or is_result_write(b)) and first_time("claim" if is_claim(b) else "write")(r, b)
            ),
        ),
    ]
    summary = launch_reporting()
    assert all(hook.injected for hook in hooks)
    assert summary["placed"] == 12
    counts = dialled(sim.calls)
    assert sorted(counts) == ids and set(counts.values()) == {1}
    assert set(statuses().values()) == {"placed"}

"""A launcher pass killed mid-flight (a Lambda timeout or OOM): nothing is dialled twice, the job ends
`unknown` at a later pass, and a late hangup callback still settles it.

A moto server process holds the table so its state survives the kill; the pass runs in its own process
(crash_runner.py) with the real launcher and dies through a botocore hook on its DynamoDB client, or by a
SIGKILL from the test while it holds the dialling lease mid-backlog (issue 13: the next run takes over).
Plivo is the simulator in this process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from chalicelib import handlers, resources
from chalicelib.calls import launcher, pacing
from devtools.local_aws import MotoServer
from tests.calls.pacinglib import arrivals, max_in_one_second
from tests.faults.faultlib import (
    ENV,
    ROOT,
    call_id_of,
    create_stack,
    dialled,
    invoke,
    make_job,
    signed_hangup_event,
)

RUNNER = Path(__file__).resolve().parent / "crash_runner.py"
STALE = launcher.STALE_DIALING_SECONDS + 60  # how far the clock of the "later" pass is moved on


@pytest.fixture
def moto_server():
    with MotoServer() as server:
        yield server.url


@pytest.fixture
def stack(moto_server, env, plivo_env):
    env.setenv("AWS_ENDPOINT_URL", moto_server)
    env.setenv("PLIVO_CPS", "50")  # the later passes; the dying one runs at 5 CPS (10 workers)
    resources.reset()
    create_stack(endpoint_url=moto_server, templates=False)
    repo = resources.job_repository()
    now = time.time()
    ids = [f"crash-{i:02d}" for i in range(40)]  # more than the dying pass's workers can claim at once
    for i, call_id in enumerate(ids):
        repo.add(make_job(call_id, due_at=now - 100 + i, to=f"141555501{i:02d}"))
    return moto_server, ids


def runner_env(moto_url: str, sim_url: str, cps: int) -> dict[str, str]:
    """The dying pass's environment: the tests' Lambda settings, moto server's and the simulator's URLs."""
    environment = {key: value for key, value in os.environ.items() if key not in ENV}
    environment.update(ENV)
    environment.update(
        {
            "AWS_ENDPOINT_URL": moto_url,
            "PLIVO_API_URL": sim_url,
            "PLIVO_CPS": str(cps),
            "PYTHONPATH": str(ROOT),
        }
    )
    return environment


def run_and_kill(moment: str, moto_url: str, sim_url: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, str(RUNNER), moment],
        env=runner_env(moto_url, sim_url, 5),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(ROOT),
    )
    assert done.returncode == 17, f"the pass was not killed: {done.returncode}\n{done.stdout}\n{done.stderr}"
    killed = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("KILLED ")]
    assert killed, done.stdout
    return killed


def statuses() -> dict[str, dict]:
    return {job["call_id"]: job for job in resources.job_repository().list()}


def settled_statuses(quiet: float = 0.3, limit: float = 10.0) -> dict[str, dict]:
    """The jobs once moto has applied every request the killed pass had already sent (its other workers'
    claims can land just after the kill): two identical snapshots `quiet` seconds apart."""
    deadline = time.monotonic() + limit
    before = statuses()
    while True:
        time.sleep(quiet)
        after = statuses()
        if after == before or time.monotonic() > deadline:
            return after
        before = after


def lease_expired() -> None:
    """What LEASE_SECONDS of waiting does to a dead holder's dialling lease, without the wait."""
    resources.calls_table().update_item(
        Key={"call_id": pacing.LEASE_ID},
        UpdateExpression="SET expires_at = :past",
        ConditionExpression="attribute_exists(holder)",
        ExpressionAttributeValues={":past": Decimal(str(round(time.time() - 1, 3)))},
    )


def later_pass(seconds: float) -> dict:
    """A scheduled run `seconds` from now (the launcher's clock injection)."""
    return launcher.Launcher(
        resources.job_repository(),
        resources.plivo_client(),
        resources.settings(),
        clock=lambda: time.time() + seconds,
    ).run()


def settle(call_id: str, request_uuid: str) -> dict:
    params = {
        "CallUUID": f"cu-{call_id}",
        "RequestUUID": request_uuid,
        "CallStatus": "completed",
        "HangupCause": "NORMAL_CLEARING",
        "Duration": "31",
        "Event": "Hangup",
        "From": "14155559999",
    }
    reply = invoke(signed_hangup_event(call_id, params))
    assert reply["statusCode"] == 200, reply
    return resources.job_repository().get(call_id)


@pytest.mark.slow
def test_killed_between_claim_and_dial(stack, sim):
    moto_url, ids = stack
    run_and_kill("after-claim", moto_url, sim.url)
    jobs = settled_statuses()
    assert sorted(jobs) == ids, "a job was lost"
    crashed = {call_id for call_id, job in jobs.items() if job["status"] == "dialing"}
    assert crashed, jobs
    assert sim.calls == [] and sim.requests == [], "the dying pass reached Plivo"
    waiting = set(ids) - crashed
    assert waiting, "the dying pass claimed every job: the test needs more jobs than workers"
    assert all(jobs[c]["status"] == "pending" for c in waiting)

    # The next run, a minute later (the dead pass's lease has expired by then): the claimed job is left
    # alone (it may be mid-dial elsewhere).
    lease_expired()
    first = handlers.launch()
    assert first["placed"] == len(ids) - len(crashed) and first["unknown"] == 0
    assert all(resources.job_repository().get(c)["status"] == "dialing" for c in crashed)

    # A run long after the claim gives up on it: unknown, never dialled.
    second = later_pass(STALE)
    assert second["unknown"] == len(crashed) and second["placed"] == 0
    jobs = statuses()
    for call_id in crashed:
        assert jobs[call_id]["status"] == "unknown"
        assert jobs[call_id].get("last_error"), jobs[call_id]
    counts = dialled(sim.calls)
    assert not crashed & set(counts), "a job whose pass died was dialled"
    assert set(counts) == waiting and set(counts.values()) == {1}
    assert later_pass(STALE * 2)["due"] == 0  # unknown is terminal for the launcher

    # Had the call gone out after all, Plivo's hangup callback settles the job.
    for call_id in crashed:
        job = settle(call_id, "late-request-uuid")
        assert job["status"] == "completed" and job["outcome"] == "completed"
        assert job["call_uuid"] == f"cu-{call_id}" and job["duration"] == 31


@pytest.mark.slow
def test_killed_between_dial_and_record(stack, sim):
    moto_url, ids = stack
    killed = run_and_kill("after-dial", moto_url, sim.url)
    assert sim.wait_for(lambda s: len(s.calls) >= 1, timeout=5)
    jobs = settled_statuses()
    assert sorted(jobs) == ids
    crashed = {call_id for call_id, job in jobs.items() if job["status"] == "dialing"}
    assert set(killed) <= crashed
    placed_before = dialled(sim.calls)
    assert set(placed_before.values()) == {1} and set(placed_before) <= crashed
    waiting = set(ids) - crashed

    assert later_pass(0)["placed"] == len(waiting)  # the next run dials only what was still pending
    assert later_pass(STALE)["unknown"] == len(crashed)
    jobs = statuses()
    assert all(jobs[c]["status"] == "unknown" for c in crashed)
    counts = dialled(sim.calls)
    assert set(counts) == waiting | set(placed_before) and set(counts.values()) == {1}, counts

    # The real hangup callback for a call placed by the dead pass arrives late and settles the job.
    uuids = {call_id_of(call): call["request_uuid"] for call in sim.calls}
    for call_id in placed_before:
        job = settle(call_id, uuids[call_id])
        assert job["status"] == "completed", job


@pytest.mark.slow
def test_the_dialling_run_killed_mid_backlog_is_taken_over_by_the_next_run(stack, sim, env):
    """SIGKILL to the process of the run that holds the dialling lease, while it dials a backlog: the next
    run takes over once the dead holder's lease has expired, dials every job the dead run had not claimed,
    and nothing is dialled twice or lost (the dead run's claimed jobs are settled by the `dialing` sweep)."""
    moto_url, ids = stack
    repo = resources.job_repository()
    now = time.time()
    ids += [f"crash-{i:03d}" for i in range(40, 160)]
    for i, call_id in enumerate(ids[40:], start=40):
        repo.add(make_job(call_id, due_at=now - 200 + i, to=f"14155501{i:03d}"))
    env.setattr(pacing, "LEASE_SECONDS", 3.0)  # as the dead run's (crash_runner.py "dialling")
    env.setattr(pacing, "RENEW_EVERY", 1.0)
    dying = subprocess.Popen(
        [sys.executable, str(RUNNER), "dialling"],
        env=runner_env(moto_url, sim.url, 10),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=str(ROOT),
    )
    try:
        assert sim.wait_for(lambda s: len(arrivals(s)) >= 30, timeout=60), "the run never dialled"
    finally:
        dying.send_signal(signal.SIGKILL)
        killed_at = time.time()
        assert dying.wait(10) == -signal.SIGKILL
    settled_statuses()
    dead_run = [call_id for stamp, call_id in arrivals(sim) if stamp <= killed_at]
    assert 30 <= len(dead_run) < len(ids) - 40, "not killed mid-backlog"

    summary = handlers.launch()  # the next scheduled run: waits for the dead holder's lease, then dials
    new_run = [(stamp, call_id) for stamp, call_id in arrivals(sim) if stamp > killed_at]
    assert new_run, summary
    # Not before the dead lease expired: renewed every second for 3 s, it had 2 s or very nearly left at the
    # kill (a run that took a live lease would start about 1 s after the kill: its own start-up).
    assert min(stamp for stamp, _ in new_run) >= killed_at + 1.6
    assert max_in_one_second([stamp for stamp, _ in arrivals(sim)]) <= 50
    assert dialled(sim.calls) == {call_id: 1 for _, call_id in arrivals(sim)}  # none twice

    jobs = settled_statuses()
    assert sorted(jobs) == sorted(ids), "a job was lost"
    crashed = {call_id for call_id, job in jobs.items() if job["status"] == "dialing"}
    assert all(jobs[c]["status"] == "placed" for _, c in new_run)
    assert {c for c, job in jobs.items() if job["status"] != "placed"} == crashed  # no job left pending
    assert crashed and crashed <= set(dead_run) | (set(ids) - {c for _, c in arrivals(sim)})
    assert later_pass(STALE)["unknown"] == len(crashed)  # the sweep settles them, never redials
    assert dialled(sim.calls) == {call_id: 1 for _, call_id in arrivals(sim)}
    assert all(statuses()[c]["status"] == "unknown" for c in crashed)

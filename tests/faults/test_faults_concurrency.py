"""Two launcher passes at once (two Lambda containers: their own boto3 clients and Plivo sessions) over
1000 due jobs, with a slow Plivo: every job is dialled exactly once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from decimal import Decimal

import boto3
import pytest

from chalicelib.calls.jobs import JobRepository
from chalicelib.calls.launcher import Launcher
from chalicelib.calls.plivo_api import PlivoClient
from chalicelib.settings import Settings
from tests.faults.faultlib import AUTH_ID, REGION, TABLE, TOKEN, dialled, make_job

JOBS = 1000


def container_launcher(sim_url: str) -> Launcher:
    """What one cold container builds: its own DynamoDB client, its own Plivo connection pool."""
    table = boto3.session.Session(region_name=REGION).resource("dynamodb").Table(TABLE)
    settings = Settings.from_env()
    return Launcher(JobRepository(table), PlivoClient(AUTH_ID, TOKEN, sim_url), settings, run_budget=50.0)


@pytest.mark.slow
def test_two_overlapping_passes_dial_each_of_1000_jobs_once(aws, plivo_env, env):
    sim = plivo_env
    env.setenv("PLIVO_CPS", "100")
    sim.latency = 0.2
    table = aws.resource("dynamodb").Table(TABLE)
    repo = JobRepository(table)
    now = time.time()
    with table.batch_writer() as batch:  # a bulk producer; due times tie in threes
        for i in range(JOBS):
            job = make_job(
                f"c-{i:04d}",
                due_at=Decimal(str(round(now - 2000 + i // 3, 3))),
                to=f"1415{i:07d}",
                attempts=0,
            )
            batch.put_item(Item=job)

    passes = [container_launcher(sim.url), container_launcher(sim.url)]
    start = threading.Barrier(len(passes))
    summaries: list[dict] = []
    errors: list[BaseException] = []

    def run(launcher: Launcher) -> None:
        try:
            start.wait()
            summaries.append(launcher.run())
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(p,)) for p in passes]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    elapsed = time.monotonic() - began
    assert not errors, errors
    assert len(summaries) == 2

    counts = dialled(sim.calls)
    twice = {call_id: n for call_id, n in counts.items() if n > 1}
    assert not twice, f"dialled more than once: {sorted(twice)[:10]}"
    assert len(counts) == JOBS, f"{JOBS - len(counts)} jobs never dialled"
    assert len(sim.requests) == JOBS  # no second request for any job, even a rejected one
    assert sum(s["placed"] for s in summaries) == JOBS
    assert all(s["failed"] == s["unknown"] == 0 for s in summaries), summaries
    assert all(s["placed"] > 0 for s in summaries), f"the passes did not really overlap: {summaries}"

    jobs = list(repo.list())
    assert len(jobs) == JOBS
    assert Counter(job["status"] for job in jobs) == {"placed": JOBS}
    assert {job["attempts"] for job in jobs} == {1}
    uuids = {call["request_uuid"] for call in sim.calls}
    assert {job["request_uuid"] for job in jobs} == uuids
    print(f"2 passes x 1000 jobs, Plivo latency 0.2 s, 100 CPS each: {elapsed:.1f} s, {summaries}")

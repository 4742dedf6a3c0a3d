"""The launcher end to end within one process: moto DynamoDB, the Plivo simulator over real HTTP."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from chalicelib import logs
from chalicelib.calls.launcher import Launcher, RateLimiter
from chalicelib.calls.plivo_api import PlivoClient
from chalicelib.settings import Settings
from tests.calls.launcherlib import AUTH_ID, AUTH_TOKEN, make_job
from tests.calls.pacinglib import FakeClock, max_in_one_second
from tests.calls.pacinglib import call_id_of as body_call_id


def launcher_for(repo, url, cps=50.0, read_timeout=2.0, **kwargs):
    settings = Settings.from_env()
    settings = Settings(**{**settings.__dict__, "plivo_cps": cps})
    client = PlivoClient(AUTH_ID, AUTH_TOKEN, url, read_timeout=read_timeout)
    return Launcher(repo, client, settings, **kwargs)


def call_id_of(call) -> str:
    return body_call_id(call["body"])


def statuses(repo) -> Counter:
    return Counter(job["status"] for job in repo.list())


@pytest.mark.slow
def test_200_jobs_at_cps_20_with_200ms_plivo(repo, sim, ddb_requests):
    sim.latency = 0.2
    for i in range(200):
        repo.add(make_job(f"job-{i:03d}", due_at=time.time() - 1000 + i))
    ddb_requests.clear()
    started = time.monotonic()
    summary = launcher_for(repo, sim.url, cps=20).run()
    elapsed = time.monotonic() - started

    assert summary == {"due": 200, "placed": 200, "deferred": 0, "failed": 0, "unknown": 0, "skipped": 0}
    dialled = Counter(call_id_of(c) for c in sim.calls)
    assert len(dialled) == 200 and set(dialled.values()) == {1}
    # sim.requests times are arrivals; sim.calls times are taken after the simulated latency
    assert max_in_one_second([r["time"] for r in sim.requests]) <= 20
    assert len(sim.requests) == 200
    assert elapsed < 200 / 20 * 1.15 + 1  # keeps up with the limit while each request takes 200 ms
    uuids = {call_id_of(c): c["request_uuid"] for c in sim.calls}
    for job in repo.list("placed"):
        assert job["request_uuid"] == uuids[job["call_id"]] and job["attempts"] == 1
        assert job["api_id"]
    assert statuses(repo) == {"placed": 200}
    assert len(ddb_requests) / 200 <= 2.1, Counter(ddb_requests)


def test_two_runs_at_once_dial_each_job_once(repo, sim):
    sim.latency = 0.01
    for i in range(300):
        repo.add(make_job(f"job-{i:03d}", due_at=time.time() - 1000 + i // 3))
    barrier = threading.Barrier(2)
    summaries = []

    def run():
        launcher = launcher_for(repo, sim.url, cps=200)
        barrier.wait()
        summaries.append(launcher.run())

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    dialled = Counter(call_id_of(c) for c in sim.calls)
    assert len(dialled) == 300 and set(dialled.values()) == {1}
    assert sum(s["placed"] for s in summaries) == 300
    assert statuses(repo) == {"placed": 300}


def test_each_plivo_outcome_ends_in_its_state(repo, sim):
    script = {
        "14155550429": [429],
        "14155550500": [500],
        "14155550503": [503],
        "14155550600": ["timeout"],
        "14155550700": ["reset"],
        "14155550400": [400],
        "14155550403": [403],
        "14155550201": [201],
    }
    sim.script.update({to: list(r) for to, r in script.items()})
    for to in script:
        repo.add(make_job(f"to-{to}", to=to))
    before = time.time()
    summary = launcher_for(repo, sim.url, read_timeout=0.5).run()

    assert summary == {"due": 8, "placed": 1, "deferred": 3, "failed": 2, "unknown": 2, "skipped": 0}
    jobs = {j["to"]: j for j in repo.list()}
    for to in ("14155550429", "14155550500", "14155550503"):
        job = jobs[to]
        assert job["status"] == "pending" and job["attempts"] == 0
        assert before + 10 < job["due_at"] < before + 60  # backed off, not lost
        assert job["last_error"].startswith(f"Plivo HTTP {script[to][0]}")
    for to in ("14155550600", "14155550700"):
        assert jobs[to]["status"] == "unknown" and jobs[to]["attempts"] == 1
    assert "no reply within 0.5 s" in jobs["14155550600"]["last_error"]
    for to in ("14155550400", "14155550403"):
        assert jobs[to]["status"] == "failed" and jobs[to]["last_error"].startswith(f"Plivo HTTP {to[-3:]}")
    assert jobs["14155550201"]["status"] == "placed"
    assert Counter(r["to"] for r in sim.requests) == dict.fromkeys(script, 1)  # nothing re-sent

    # the backed-off jobs are dialled by a later run once due; unknown ones never are
    summary = launcher_for(repo, sim.url, clock=lambda: time.time() + 120).run()
    assert summary["placed"] == 3
    assert statuses(repo) == {"placed": 4, "failed": 2, "unknown": 2}


def test_connection_refused_is_a_safe_retry(repo):
    from devtools.local_aws import free_port

    port = free_port()  # closed again: nothing listens there
    repo.add(make_job("a"))
    summary = launcher_for(repo, f"http://127.0.0.1:{port}").run()
    job = repo.get("a")
    assert summary["deferred"] == 1
    assert job["status"] == "pending" and job["due_at"] > time.time() and job["attempts"] == 0
    assert "before sending" in job["last_error"]


class Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_401_stops_the_run_and_leaves_the_rest_pending(repo, sim):
    sim.script["14155550401"] = [401]
    repo.add(make_job("first", to="14155550401", due_at=time.time() - 100))
    for i in range(5):
        repo.add(make_job(f"later-{i}", due_at=time.time() - 50 + i))
    collect = Collect()
    logging.getLogger(logs.SERVICE).addHandler(collect)
    try:
        summary = launcher_for(repo, sim.url, workers=1).run()
    finally:
        logging.getLogger(logs.SERVICE).removeHandler(collect)
    assert summary["placed"] == 0 and summary["skipped"] == 1
    assert statuses(repo) == {"pending": 6}
    assert repo.get("first")["attempts"] == 0 and "401" in repo.get("first")["last_error"]
    assert len(sim.requests) == 1
    assert any(r.levelno == logging.ERROR and "401" in str(r.__dict__) for r in collect.records)


def test_wrong_token_is_a_401_from_the_simulator(repo, sim):
    repo.add(make_job("a"))
    settings = Settings.from_env()
    client = PlivoClient(AUTH_ID, "wrong-token", sim.url)
    summary = Launcher(repo, client, settings).run()
    assert summary["skipped"] == 1 and repo.get("a")["status"] == "pending"
    assert sim.calls == []


@pytest.mark.parametrize(
    "changes",
    [
        {"headers": {"Customer-Id": "1"}},
        {"headers": {"Customer Id": "1"}},
        {"headers": {"N" * 25: "1"}},
        {"headers": {"Name": "v" * 121}},
        {"to": "1415CALLME"},
        {"from": "ACME"},
        {"answer_method": "PATCH"},
        {"tz": "Mars/Olympus"},
        {"window": "9am-5pm"},
    ],
)
def test_bad_jobs_fail_without_a_request(repo, sim, changes):
    repo.add(make_job("bad", **changes))
    summary = launcher_for(repo, sim.url).run()
    job = repo.get("bad")
    assert summary["failed"] == 1
    assert job["status"] == "failed" and job["last_error"].startswith("invalid job: ")
    key, value = next(iter(changes.items()))
    shown = next(iter(value)) if isinstance(value, dict) else value
    assert repr(shown) in job["last_error"] or shown in job["last_error"]
    assert sim.requests == []


@pytest.mark.parametrize(
    "night, morning",
    [
        ((2026, 6, 1, 23, 0), (2026, 6, 2, 8, 0)),
        ((2026, 3, 7, 23, 0), (2026, 3, 8, 8, 0)),  # DST starts that night
        ((2026, 10, 31, 23, 0), (2026, 11, 1, 8, 0)),  # DST ends that night
    ],
)
def test_calls_outside_the_window_wait_for_eight_local(repo, sim, monkeypatch, night, morning):
    monkeypatch.setenv("CALL_WINDOW", "08:00-21:00")
    ny = ZoneInfo("America/New_York")
    now = datetime(*night, tzinfo=ny).timestamp()
    repo.add(make_job("ny", due_at=now - 60, tz="America/New_York"))
    # A number that gives no zone (555 is fictional) uses DEFAULT_TZ: 03:00-04:00 UTC, also outside.
    repo.add(make_job("utc", due_at=now - 60, to="15555550100"))
    repo.add(make_job("own-window", due_at=now - 60, tz="America/New_York", window="22:00-23:30"))
    summary = launcher_for(repo, sim.url, clock=lambda: now).run()
    assert summary == {"due": 3, "placed": 1, "deferred": 2, "failed": 0, "unknown": 0, "skipped": 0}
    job = repo.get("ny")
    assert job["status"] == "pending" and job["attempts"] == 0
    assert datetime.fromtimestamp(job["due_at"], ny).replace(tzinfo=None) == datetime(*morning)
    assert datetime.fromtimestamp(repo.get("utc")["due_at"], ZoneInfo("UTC")).hour == 8
    assert [call_id_of(c) for c in sim.calls] == ["own-window"]


def test_little_time_left_claims_nothing(repo, sim):
    for i in range(5):
        repo.add(make_job(f"j{i}"))
    summary = launcher_for(repo, sim.url, remaining_ms=lambda: 2000).run()
    assert summary["due"] == 0 and summary["placed"] == 0
    assert statuses(repo) == {"pending": 5} and sim.requests == []


def test_run_stops_claiming_when_time_runs_short(repo, sim):
    sim.latency = 0.05
    for i in range(60):
        repo.add(make_job(f"j{i:02d}", due_at=time.time() - 100 + i))
    launcher = launcher_for(repo, sim.url, cps=10, workers=3, read_timeout=0.5)
    # reserve = 3/10 s wait + 1.0 s request + 2 s safety; the context allows ~1 s of claiming past it, from
    # the moment the pass reads its first page (the sweeps before it take seconds on a loaded machine)
    deadline = time.monotonic() + 600.0
    original = repo.query_status

    def first_page_starts_the_clock(status, **kwargs):
        nonlocal deadline
        if status == "pending" and deadline - time.monotonic() > 60:
            deadline = time.monotonic() + launcher.reserve_ms / 1000 + 1.0
        return original(status, **kwargs)

    repo.query_status = first_page_starts_the_clock
    launcher.remaining_ms = lambda: int((deadline - time.monotonic()) * 1000)
    summary = launcher.run()
    counts = statuses(repo)
    assert 3 <= summary["placed"] <= 25
    assert counts["placed"] == summary["placed"] == len(sim.calls)
    assert counts["pending"] == 60 - summary["placed"]
    assert "dialing" not in counts
    assert time.monotonic() < deadline + launcher.reserve_ms / 1000


def test_stale_dialing_becomes_unknown_and_is_not_dialled(repo, sim):
    repo.add(make_job("stuck", status="dialing", updated_at=time.time() - 3600, attempts=1))
    repo.add(make_job("fresh", status="dialing", updated_at=time.time() - 5, attempts=1))
    summary = launcher_for(repo, sim.url).run()
    assert summary["unknown"] == 1
    stuck = repo.get("stuck")
    assert stuck["status"] == "unknown" and "may have been placed" in stuck["last_error"]
    assert repo.get("fresh")["status"] == "dialing"
    assert sim.requests == []


def test_cancelled_between_query_and_claim_is_skipped(repo, sim):
    repo.add(make_job("a"))
    original = repo.claim

    def cancel_first(call_id, now):
        repo.cancel(call_id)
        return original(call_id, now)

    repo.claim = cancel_first
    summary = launcher_for(repo, sim.url).run()
    assert summary["skipped"] == 1 and repo.get("a")["status"] == "cancelled" and sim.requests == []


def test_rate_limiter_never_exceeds_capacity_in_any_window():
    starts = []
    limiter = RateLimiter(5, margin=0.0, cold_start=0.0)
    end = time.monotonic() + 1.6
    while time.monotonic() < end:
        grant = limiter.acquire()
        assert grant is not None
        grant.sent()
        starts.append(time.monotonic())
    assert max_in_one_second(starts) <= 5
    assert len(starts) >= 10


def test_a_start_counts_from_its_send_not_its_grant():
    """A worker that sends 0.3 s after its grant: the window runs from the send, so the start one window
    later waits for it; an unsent grant counts as starting "now" until it is stamped."""
    clock = FakeClock(100.0)
    limiter = RateLimiter(2, margin=0.0, cold_start=0.0, clock=clock, sleep=clock.sleep)
    first = limiter.acquire()
    clock.now += 0.3
    first.sent()  # on the wire at 100.3
    second = limiter.acquire()
    second.sent()
    third = limiter.acquire()  # the window of two starts is full until the first send + 1 s
    assert third is not None and clock.now == pytest.approx(101.3)
    third.sent()
    pending = limiter.acquire()  # never stamped: it keeps counting as now
    clock.now += 5.0
    limiter.acquire().sent()
    assert limiter.acquire() is not None and clock.now == pytest.approx(107.75)  # a window after 106.75
    pending.cancel()


def test_no_grant_without_its_dial_time_check_after_a_late_wake_up():
    """The check runs once the start is near; a thread that wakes after the start was due (the clock
    jumped past it between the two looks) still runs the check before it is granted."""
    times = iter([100.0] * 4)  # the first grant and its stamp, a look from afar; then the clock is late
    clock = FakeClock(100.0)
    limiter = RateLimiter(
        1, margin=0.0, cold_start=0.0, clock=lambda: next(times, clock.now), sleep=clock.sleep
    )
    limiter.acquire().sent()
    clock.now = 101.5
    checks: list[float] = []
    assert limiter.acquire(prepare=lambda: checks.append(clock.now)) is not None
    assert checks == [101.5]


def test_a_runs_first_starts_count_late_for_their_new_connections():
    """The first `capacity` starts go out on new connections, which the server reads later: they count as
    `cold_start` later, so the first start of the next window waits that much longer. A hand-over's seeded
    starts were stamped on the wire by the previous holder and count as they are, but the new holder's own
    first starts are on new connections too (a new process) and count late."""
    clock = FakeClock(100.0)
    limiter = RateLimiter(2, margin=0.0, cold_start=0.1, clock=clock, sleep=clock.sleep)
    for _ in range(2):
        limiter.acquire().sent()  # at 100.0 and 100.45, counted at 100.1 and 100.55
    assert limiter.acquire() is not None and clock.now == pytest.approx(101.1)
    handed = RateLimiter(2, margin=0.0, cold_start=0.1, clock=clock, sleep=clock.sleep)
    handed.seed([clock.now - 0.5])
    handed.acquire().sent()
    second = handed.acquire()
    assert second is not None and clock.now == pytest.approx(101.6)  # the seeded start + 1 s
    second.sent()
    assert handed.acquire() is not None and clock.now == pytest.approx(102.2)  # cold: 101.1 + 0.1 + 1 s


def test_an_early_grant_waits_at_the_socket_for_the_window():
    """With `early`, a start is granted up to that much before the window allows it; `hold` (right before
    the write) waits for the rest, so the stamps still keep the window, and the send delay after a grant
    no longer adds to every window."""
    clock = FakeClock(100.0)
    limiter = RateLimiter(2, margin=0.0, cold_start=0.0, clock=clock, sleep=clock.sleep, early=0.05)
    for _ in range(2):
        grant = limiter.acquire()
        grant.hold()
        grant.sent()  # at 100.0 and 100.45
    third = limiter.acquire()
    assert clock.now == pytest.approx(100.95)  # granted 50 ms before the first start + 1 s
    third.hold()
    assert clock.now == pytest.approx(101.0)  # ...and on the wire only when the window allows it
    third.sent()
    assert third.sent_at == pytest.approx(101.0)


def test_of_two_early_grants_the_second_through_its_hold_counts_the_first():
    """Two grants held at once: neither counts the other while both wait (no slot is lost to a double
    count), and whichever passes second counts the first as starting, so one window never takes both."""
    clock = FakeClock(100.0)
    limiter = RateLimiter(2, margin=0.0, cold_start=0.0, clock=clock, sleep=clock.sleep, early=0.5)
    limiter.spacing = 0.0  # the window alone decides here
    first = limiter.acquire()
    first.hold()
    first.sent()  # at 100.0
    clock.now = 100.6
    a, b = limiter.acquire(), limiter.acquire()  # b: 0.5 s early for the slot after a's
    a.hold()
    assert clock.now == pytest.approx(100.6)  # a fits: b, still in its hold, is not counted
    b.hold()  # a is through its hold and unsent: it counts as now, so b waits for first + 1 s
    assert clock.now == pytest.approx(101.0)
    a.sent()
    b.sent()
    assert max_in_one_second([first.sent_at, a.sent_at, b.sent_at]) <= 2


def test_early_grants_never_put_more_than_capacity_on_the_wire_in_any_window():
    """Real threads, a real clock: workers that send at random moments after early grants."""
    import random

    limiter = RateLimiter(5, margin=0.0, cold_start=0.0, early=0.05)
    stamps: list[float] = []
    lock = threading.Lock()
    end = time.monotonic() + 1.6

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < end:
            grant = limiter.acquire()
            time.sleep(rng.uniform(0.0, 0.08))  # the send path after the grant
            grant.hold()
            grant.sent()
            with lock:
                stamps.append(grant.sent_at)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert max_in_one_second(sorted(stamps)) <= 5
    assert len(stamps) >= 10


def test_a_cancelled_grant_gives_its_start_back():
    clock = FakeClock(100.0)
    limiter = RateLimiter(1, margin=0.0, cold_start=0.0, clock=clock, sleep=clock.sleep)
    limiter.acquire().cancel()
    assert limiter.acquire() is not None and clock.now == pytest.approx(100.9)  # spacing only


def test_fractional_cps_spaces_single_starts():
    limiter = RateLimiter(0.5, margin=0.0, cold_start=0.0)
    assert (limiter.capacity, limiter.period) == (1, 2.0)


def test_a_failed_page_read_ends_the_pass_with_a_summary(repo, sim):
    for i in range(5):
        repo.add(make_job(f"j{i}"))
    original = repo.query_status

    def failing(status, **kwargs):
        if status == "pending":
            yield from list(original(status, **kwargs))[:2]
            raise RuntimeError("page 2 refused")
        yield from original(status, **kwargs)

    repo.query_status = failing
    summary = launcher_for(repo, sim.url).run()
    assert summary["placed"] == 2 and statuses(repo) == {"placed": 2, "pending": 3}


def test_the_client_reports_the_moment_the_request_is_on_the_wire(sim):
    """`on_sent` fires once, after the request reached the socket and before Plivo's reply; a connection
    that was refused never sent, so it never fires."""
    from chalicelib.calls.plivo_api import PlivoClient

    sim.latency = 0.3
    stamps: list[float] = []
    client = PlivoClient(AUTH_ID, AUTH_TOKEN, sim.url)
    body = {"from": "14155559999", "to": "14155550100", "answer_url": "https://example.com/a"}
    began = time.time()
    before: list[int] = []
    result = client.create_call(
        body, on_sent=lambda: stamps.append(time.time()), before_send=lambda: before.append(len(sim.requests))
    )
    done = time.time()
    assert result.outcome == "placed" and len(stamps) == 1
    assert before == [0]  # `before_send` ran once, before the simulator had the request
    arrived = sim.requests[0]["time"]
    assert began <= stamps[0] <= arrived + 0.05 and done - stamps[0] >= 0.25
    refused = PlivoClient(AUTH_ID, AUTH_TOKEN, "http://127.0.0.1:9")
    assert refused.create_call(body, on_sent=lambda: stamps.append(0.0)).outcome == "retry"
    assert len(stamps) == 1
    client.create_call(body)  # no callback left behind from the earlier requests
    assert len(stamps) == 1

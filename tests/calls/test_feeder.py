"""The Feeder: due jobs read ahead by a thread of its own, handed out by campaign weight (pure, no AWS)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from chalicelib.calls import dialling
from chalicelib.calls.dialling import Feeder


class Pages:
    """A due-job iterator that records how far it was read, and can be slow or fail after `fail_at`."""

    def __init__(self, jobs: list[dict], delay: float = 0.0, fail_at: int | None = None) -> None:
        self.jobs = jobs
        self.delay = delay
        self.fail_at = fail_at
        self.read = 0
        self.threads: set[str] = set()

    def __iter__(self) -> Iterator[dict]:
        for i, job in enumerate(self.jobs):
            if self.fail_at is not None and i == self.fail_at:
                raise RuntimeError("ProvisionedThroughputExceededException")
            if self.delay:
                time.sleep(self.delay)
            self.threads.add(threading.current_thread().name)
            self.read += 1
            yield job


def jobs(count: int, campaigns: str = "AB") -> list[dict]:
    return [{"call_id": f"job-{i:04d}", "campaign": campaigns[i % len(campaigns)]} for i in range(count)]


def wait_until(predicate, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def test_reads_ahead_in_its_own_thread_up_to_the_lookahead_and_no_further():
    pages = Pages(jobs(500))
    feeder = Feeder(iter(pages), lambda name: 1.0, lookahead=50)
    first = next(feeder)
    wait_until(lambda: pages.read >= 51)
    time.sleep(0.05)
    assert pages.read == 51  # 50 held once the first was handed out, and no more
    assert pages.threads == {"due-reader"}
    assert first["call_id"] == "job-0000"
    rest = list(feeder)
    assert [j["call_id"] for j in [first, *rest]] == sorted(j["call_id"] for j in pages.jobs)


def test_a_slow_page_does_not_hold_up_jobs_already_read():
    """The point of the thread: with the window full, handing out never waits on a page."""
    pages = Pages(jobs(40), delay=0.0)
    feeder = Feeder(iter(pages), lambda name: 1.0, lookahead=20)
    next(feeder)
    wait_until(lambda: pages.read >= 21)
    pages.delay = 0.5  # every further read now takes half a second
    started = time.monotonic()
    handed = [next(feeder) for _ in range(15)]
    assert time.monotonic() - started < 0.4
    assert len(handed) == 15
    feeder.close()


def test_a_failed_page_hands_out_what_was_read_then_raises():
    pages = Pages(jobs(30), fail_at=12)
    feeder = Feeder(iter(pages), lambda name: 1.0, lookahead=100)
    handed = []
    with pytest.raises(RuntimeError, match="ProvisionedThroughput"):
        for job in feeder:
            handed.append(job["call_id"])
    assert sorted(handed) == [f"job-{i:04d}" for i in range(12)]


def test_close_stops_the_reader():
    pages = Pages(jobs(1000), delay=0.001)
    feeder = Feeder(iter(pages), lambda name: 1.0, lookahead=1000)
    next(feeder)
    feeder.close()
    at_close = pages.read
    time.sleep(0.1)
    assert pages.read <= at_close + 1  # at most the read already under way
    assert pages.read < 1000


def test_shares_follow_the_weights_over_what_is_read_ahead():
    pages = Pages(jobs(3000, campaigns="ABBC"))
    weights = {"A": 1.0, "B": 1.0, "C": 2.0}  # B has twice A's jobs, C has A's number and twice its weight
    feeder = Feeder(iter(pages), weights.__getitem__, lookahead=400)
    picks = Counter([next(feeder)["campaign"]])
    wait_until(lambda: pages.read >= 401)  # as a run's limiter lets the reader fill the window
    picks.update(next(feeder)["campaign"] for _ in range(159))  # C's 100 read ahead last 200 picks
    assert picks["C"] == pytest.approx(2 * picks["A"], rel=0.1)
    assert picks["B"] == pytest.approx(picks["A"], rel=0.1)


def test_peek_sees_jobs_read_ahead_without_taking_them():
    pages = Pages(jobs(10))
    feeder = Feeder(iter(pages), lambda name: 1.0, lookahead=10)
    next(feeder)
    wait_until(lambda: pages.read == 10)
    seen = [j["call_id"] for j in feeder.peek(4)]
    assert len(seen) == 4
    assert len(list(feeder)) == 9


@pytest.mark.parametrize(
    ("cps", "expected"),
    [(0.5, dialling.MIN_LOOKAHEAD), (2, dialling.MIN_LOOKAHEAD), (10, 200), (50, 1000), (300, 5000)],
)
def test_the_lookahead_is_twenty_seconds_of_dialling_within_bounds(cps, expected):
    assert dialling.lookahead(cps) == expected

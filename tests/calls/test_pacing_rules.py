"""The dialling lease (through moto) and the weighted shares between campaigns (pure)."""

from __future__ import annotations

import threading
from collections import Counter

import boto3
import pytest
from moto import mock_aws

from chalicelib.calls import pacing
from devtools import local_aws
from tests.calls.pacinglib import FakeClock


def test_shares_follow_the_weights():
    shares = pacing.Shares()
    weights = {"A": 1.0, "B": 2.0, "C": 1.0}
    picks = Counter(shares.pick(["A", "B", "C"], weights) for _ in range(4000))
    assert picks == {"A": 1000, "B": 2000, "C": 1000}


def test_a_campaign_without_due_jobs_leaves_its_share_and_rejoins_without_a_backlog():
    shares = pacing.Shares()
    weights = {"A": 1.0, "B": 1.0}
    assert Counter(shares.pick(["A"], weights) for _ in range(100)) == {"A": 100}
    later = Counter(shares.pick(["A", "B"], weights) for _ in range(100))
    assert later == {"A": 50, "B": 50}
    assert shares.pick([], weights) is None


@pytest.fixture
def table(monkeypatch):
    for key, value in {
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        client = boto3.client("dynamodb")
        client.create_table(**local_aws.create_table_args(local_aws.cfn_resource("CallsTable"), "calls"))
        yield boto3.resource("dynamodb").Table("calls")


def test_one_holder_at_a_time_and_expiry(table):
    clock = FakeClock()
    a, b = pacing.Lease(table, clock, "a"), pacing.Lease(table, clock, "b")
    assert a.try_acquire() and not b.try_acquire()
    clock.now += pacing.LEASE_SECONDS + 1  # a died without renewing
    assert b.try_acquire()
    assert not a.still_held()  # the renewal fails: a must not start another call


def test_many_workers_asking_at_the_renewal_time_renew_once(table):
    """Every worker asks `still_held` before each start: at the renewal time one of them writes, the
    others go on (the lease is still theirs), instead of a burst of writes from all of them."""
    clock = FakeClock()
    lease = pacing.Lease(table, clock, "a")
    assert lease.try_acquire()
    clock.now += pacing.RENEW_EVERY + 0.1
    writes: list[int] = []
    entered, release = threading.Event(), threading.Event()
    real_update = table.update_item

    def slow_update(**kwargs):
        writes.append(1)
        entered.set()
        release.wait(5)  # the renewal is in flight while the other workers ask
        return real_update(**kwargs)

    table.update_item = slow_update
    try:
        answers: list[bool] = []
        first = threading.Thread(target=lambda: answers.append(lease.still_held()))
        first.start()
        assert entered.wait(5)
        others = [threading.Thread(target=lambda: answers.append(lease.still_held())) for _ in range(20)]
        for thread in others:
            thread.start()
        for thread in others:
            thread.join(5)
        release.set()
        first.join(5)
    finally:
        del table.update_item
    assert answers == [True] * 21 and len(writes) == 1
    assert lease.held_until == pytest.approx(clock.now + pacing.LEASE_SECONDS)
    assert lease.still_held() and len(writes) == 1  # renewed: nothing to write for RENEW_EVERY


def test_the_waiter_sweeps_shortly_before_its_turn_not_after_it(table):
    """The work that needs no lease runs once, as the registered waiter, about BEFORE_TURN seconds before
    the holder hands over: the new holder's first call then follows the hand-over at once."""
    clock = FakeClock()
    a, b = pacing.Lease(table, clock, "a"), pacing.Lease(table, clock, "b")
    start = clock.now
    assert a.try_acquire(handover_at=start + 30)
    swept: list[float] = []

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if clock.now >= start + 30 and a.held_until:
            a.release([clock.now])

    def before_turn() -> None:
        assert b.read().waiter == "b"
        swept.append(clock.now - start)

    assert b.wait_turn(deadline=start + 100, sleep=sleep, before_turn=before_turn)
    assert len(swept) == 1
    assert 30 - pacing.BEFORE_TURN - 0.5 <= swept[0] <= 30 - pacing.BEFORE_TURN + 0.1
    assert clock.now - start == pytest.approx(30, abs=0.5)


def counting_writes(table) -> list[dict]:
    writes: list[dict] = []
    real_update = table.update_item

    def update_item(**kwargs):
        writes.append(kwargs)
        return real_update(**kwargs)

    table.update_item = update_item
    return writes


def test_taking_the_lease_announces_the_hand_over_in_the_same_write(table):
    clock = FakeClock()
    lease = pacing.Lease(table, clock, "a")
    writes = counting_writes(table)
    assert lease.try_acquire(handover_at=clock.now + 40)
    assert len(writes) == 1
    state = lease.read()
    assert state.holder == "a" and state.handover_at == pytest.approx(clock.now + 40)
    assert pacing.free_at(state) == pytest.approx(clock.now + 30)  # expiry comes first until renewed


def test_the_waiter_takes_over_within_one_turn_poll_of_the_release(table):
    """The holder releases when its last call has started, a little after its announced turn: the waiter
    is then trying to take the lease every TURN_POLL seconds, not every 50 ms plus a read."""
    clock = FakeClock()
    a, b = pacing.Lease(table, clock, "a"), pacing.Lease(table, clock, "b")
    turn = clock.now + 20
    assert a.try_acquire(handover_at=turn)
    released_at: list[float] = []

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if clock.now >= turn + 0.013 and not released_at:
            a.release([clock.now])
            released_at.append(clock.now)

    writes = counting_writes(table)
    assert b.wait_turn(deadline=turn + 60, sleep=sleep, handover_at=turn + 50)
    assert clock.now - released_at[0] <= pacing.TURN_POLL + 1e-6
    tries = [w for w in writes if "holder = :me, expires_at = :exp" in w["UpdateExpression"]]
    assert len(tries) <= (pacing.TURN_POLL_FROM + 0.013) / pacing.TURN_POLL + 8  # the tight poll, no more
    assert b.read().handover_at == pytest.approx(turn + 50)


def test_a_holder_late_to_release_is_polled_tightly_only_for_a_while(table):
    """A holder that announced its turn and then died: the waiter polls every TURN_POLL for TURN_POLL_FOR
    seconds after the turn, then at the usual pace until the lease expires."""
    clock = FakeClock()
    a, b = pacing.Lease(table, clock, "a"), pacing.Lease(table, clock, "b")
    turn = clock.now + 5
    assert a.try_acquire(handover_at=turn)  # expires at +30
    writes = counting_writes(table)
    assert b.wait_turn(deadline=clock.now + 100, sleep=clock.sleep)
    assert clock.now == pytest.approx(turn + 25, abs=0.1)  # taken at expiry
    tight = (pacing.TURN_POLL_FROM + pacing.TURN_POLL_FOR) / pacing.TURN_POLL
    slow = (25 - pacing.TURN_POLL_FOR) / 0.05
    assert tight <= len(writes) <= tight + slow + 10


def test_a_free_lease_is_taken_at_once_without_the_early_sweep(table):
    clock = FakeClock()
    lease = pacing.Lease(table, clock, "a")
    called: list[bool] = []
    assert lease.wait_turn(clock.now + 10, sleep=clock.sleep, before_turn=lambda: called.append(True))
    assert called == []  # the launcher sweeps after taking it


def test_hand_over_keeps_a_second_between_holders(table):
    clock = FakeClock()
    a, b = pacing.Lease(table, clock, "a"), pacing.Lease(table, clock, "b")
    assert a.try_acquire(handover_at=clock.now + 20)
    a.release([clock.now - 0.5, clock.now - 0.2])
    assert b.try_acquire()
    assert b.previous_starts == pytest.approx((clock.now - 0.5, clock.now - 0.2))


def test_a_waiting_run_takes_over_at_the_announced_moment(table):
    clock = FakeClock()
    a, b, c = (pacing.Lease(table, clock, name) for name in "abc")
    assert a.try_acquire(handover_at=clock.now + 30)

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if clock.now >= start + 30:
            a.release([clock.now])

    start = clock.now
    assert b.wait_turn(deadline=clock.now + 100, sleep=sleep)
    assert clock.now - start == pytest.approx(30, abs=0.5)
    assert not c.wait_turn(deadline=clock.now + 5, sleep=clock.sleep)  # held by b, which renews: c gives up
    state = b.read()
    assert state.holder == "b" and state.waiter == "c" or state.holder == "b"

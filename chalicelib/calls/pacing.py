"""One CPS budget for the whole account: a dialling lease, and weighted shares between campaigns.

Only the launcher run that holds the lease starts calls, so starts from overlapping runs (the scheduled
one, a slow earlier one, `callflow launch`, a second stack on the same table) never add up above
PLIVO_CPS. The lease is one item in the calls table (`call_id = LEASE_ID`, no `status`, so no index sees
it). The holder renews it while it dials and, when its own Lambda time runs short, writes `handover_at`:
it starts no call after that moment, then releases the lease with the times of its last starts, and the
run that is waiting takes over at once and counts those starts in its own rate limiter, so dialling
continues across scheduled runs without a gap and a hand-over cannot squeeze two holders' starts into one
second. A holder that dies simply stops renewing: the lease expires after LEASE_SECONDS and the next run
(at most a minute later) takes over; the dead holder's last start is then long past.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

LEASE_ID = "#launcher-lease"
LEASE_SECONDS = 30.0
RENEW_EVERY = 10.0
BEFORE_TURN = 1.0  # seconds before the lease frees that a waiter does the work that needs no lease
TURN_POLL_FROM = 0.5  # seconds before the announced turn that the waiter polls only by trying to take it
TURN_POLL = 0.02
TURN_POLL_FOR = 1.0  # seconds after the announced turn that it keeps polling so (the holder's last sends)
RECENT_STARTS = 200  # start times handed over with the lease (more than any one second can hold)


@dataclass(frozen=True)
class LeaseState:
    holder: str | None
    expires_at: float
    handover_at: float | None
    last_starts: tuple[float, ...]
    waiter: str | None


def _f(value: Any, default: float = 0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def state_of(item: Mapping[str, Any] | None) -> LeaseState:
    if not item:
        return LeaseState(None, 0.0, None, (), None)
    handover = item.get("handover_at")
    return LeaseState(
        holder=item.get("holder") if isinstance(item.get("holder"), str) else None,
        expires_at=_f(item.get("expires_at")),
        handover_at=_f(handover) if handover is not None else None,
        last_starts=tuple(_f(t) for t in item.get("last_starts") or () if _f(t) > 0),
        waiter=item.get("waiter") if isinstance(item.get("waiter"), str) else None,
    )


def free_at(state: LeaseState) -> float:
    """When the lease can be taken: now if nobody holds it, else at hand-over or expiry, whichever comes
    first."""
    if state.holder is None:
        return 0.0
    if state.handover_at is not None:
        return min(state.handover_at, state.expires_at)
    return state.expires_at


def _dec(value: float) -> Decimal:
    return Decimal(str(round(value, 3)))


class Lease:
    """The dialling lease in the calls table; `clock` is wall-clock time (all runs share it)."""

    def __init__(self, table: Any, clock: Callable[[], float] = time.time, holder: str | None = None) -> None:
        self.table = table
        self.clock = clock
        self.holder = holder or uuid.uuid4().hex
        self.held_until = 0.0
        self.previous_starts: tuple[float, ...] = ()  # the previous holder's last starts (wall clock)
        self._renewed = 0.0
        self._renewing = threading.Lock()

    def read(self) -> LeaseState:
        item = self.table.get_item(Key={"call_id": LEASE_ID}, ConsistentRead=True).get("Item")
        return state_of(item)

    def try_acquire(self, handover_at: float | None = None) -> bool:
        """Take the lease if it is free, expired or released; True when this run holds it now. An announced
        hand-over is not enough: the holder may still be starting its last calls until it releases.
        `handover_at` is announced in the same write (one request less between two holders' calls)."""
        now = self.clock()
        values: dict[str, Any] = {":me": self.holder, ":exp": _dec(now + LEASE_SECONDS), ":now": _dec(now)}
        update = "SET holder = :me, expires_at = :exp, acquired_at = :now"
        if handover_at is None:
            update += " REMOVE handover_at, waiter"
        else:
            update += ", handover_at = :at REMOVE waiter"
            values[":at"] = _dec(handover_at)
        try:
            reply = self.table.update_item(
                Key={"call_id": LEASE_ID},
                UpdateExpression=update,
                ConditionExpression="attribute_not_exists(holder) OR holder = :me OR expires_at <= :now",
                ExpressionAttributeValues=values,
                ReturnValues="ALL_OLD",
            )
        except self.table.meta.client.exceptions.ConditionalCheckFailedException:
            return False
        previous = state_of(reply.get("Attributes"))
        self.held_until = now + LEASE_SECONDS
        self._renewed = now
        self.previous_starts = previous.last_starts
        return True

    def wait_turn(
        self,
        deadline: float,
        sleep: Callable[[float], None] = time.sleep,
        before_turn: Callable[[], None] | None = None,
        handover_at: float | None = None,
    ) -> bool:
        """Wait (until `deadline`) for the holder to hand over or die, then take the lease (announcing
        `handover_at`). A run exits at once when another run is already waiting or the lease frees only
        after its own deadline.

        `before_turn` runs once, as the registered waiter, about BEFORE_TURN seconds before the lease frees:
        work that needs no lease (the sweeps) is then done when the turn comes, not between two holders'
        calls. From TURN_POLL_FROM seconds before the turn the waiter only tries to take it, every
        TURN_POLL seconds: the holder releases when its last call has started, and each poll's delay is
        a gap in dialling."""
        polled = False
        while True:
            if self.try_acquire(handover_at):
                return True
            state = self.read()
            at = free_at(state)
            now = self.clock()
            if at > deadline:
                return False
            if state.waiter not in (None, self.holder) and state.expires_at > now:
                return False  # somebody else takes over next; this run has nothing to add
            if state.waiter is None and not self._register_waiter():
                return False
            if before_turn is not None and at - now <= BEFORE_TURN:
                before_turn()
                before_turn = None
                continue
            if not polled and at - now <= TURN_POLL_FROM:
                polled = True  # once per wait: a holder late to release is then polled at the usual pace
                if self._take_at_turn(min(deadline, at + TURN_POLL_FOR), sleep, handover_at):
                    return True
                continue
            wake = BEFORE_TURN if before_turn is not None else TURN_POLL_FROM
            sleep(max(0.05, min(at - now - wake, 5.0)))
            if self.clock() > deadline:
                return False

    def _take_at_turn(self, until: float, sleep: Callable[[float], None], handover_at: float | None) -> bool:
        """Try to take the lease every TURN_POLL seconds until `until`."""
        while self.clock() <= until:
            if self.try_acquire(handover_at):
                return True
            sleep(TURN_POLL)
        return False

    def _register_waiter(self) -> bool:
        try:
            self.table.update_item(
                Key={"call_id": LEASE_ID},
                UpdateExpression="SET waiter = :me",
                ConditionExpression="attribute_not_exists(waiter) OR waiter = :me",
                ExpressionAttributeValues={":me": self.holder},
            )
        except self.table.meta.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def still_held(self) -> bool:
        """Renew every RENEW_EVERY seconds; False once the lease is lost (then no call may start).

        Every worker asks before each start: one of them renews, and the others go on while the lease is
        still theirs for a while, or wait for that renewal's answer when it is not (all of them renewing
        at once was a burst of writes every 10 s)."""
        now = self.clock()
        if now - self._renewed < RENEW_EVERY and now < self.held_until - 2.0:
            return True
        if not self._renewing.acquire(blocking=False):
            if now < self.held_until - 2.0:
                return True
            self._renewing.acquire()
        try:
            now = self.clock()
            if now - self._renewed < RENEW_EVERY and now < self.held_until - 2.0:
                return True  # renewed by another worker meanwhile
            if self.held_until == 0.0:
                return False  # lost: another worker's renewal found it taken
            return self._renew()
        finally:
            self._renewing.release()

    def _renew(self) -> bool:
        now = self.clock()
        try:
            self.table.update_item(
                Key={"call_id": LEASE_ID},
                UpdateExpression="SET expires_at = :exp",
                ConditionExpression="holder = :me",
                ExpressionAttributeValues={":me": self.holder, ":exp": _dec(now + LEASE_SECONDS)},
            )
        except self.table.meta.client.exceptions.ConditionalCheckFailedException:
            self.held_until = 0.0
            return False
        self.held_until = now + LEASE_SECONDS
        self._renewed = now
        return True

    def release(self, starts: Iterable[float] = ()) -> None:
        """Hand the lease over now, with this holder's last start times for the next holder's limiter."""
        now = self.clock()
        recent = [_dec(t) for t in sorted(starts)[-RECENT_STARTS:] if t > now - 5.0]
        self._set(
            "SET handover_at = :now, expires_at = :now, last_starts = :starts",
            {":now": _dec(now), ":starts": recent},
        )
        self.held_until = 0.0

    def _set(self, expression: str, values: dict[str, Any]) -> None:
        try:
            self.table.update_item(
                Key={"call_id": LEASE_ID},
                UpdateExpression=expression,
                ConditionExpression="holder = :me",
                ExpressionAttributeValues={":me": self.holder, **values},
            )
        except self.table.meta.client.exceptions.ConditionalCheckFailedException:
            self.held_until = 0.0


# ---------------------------------------------------------------- shares between campaigns


class Shares:
    """Stride scheduling: each campaign with due jobs gets starts in proportion to its weight; one with none
    leaves its share to the others. Pure and deterministic."""

    def __init__(self) -> None:
        self._pass: dict[str, float] = {}
        self._virtual = 0.0  # the pass of the latest pick: where an idle queue re-enters

    def pick(self, ready: Iterable[str], weights: Mapping[str, float]) -> str | None:
        """The queue that should start the next call, among those that have a job ready."""
        candidates = list(ready)
        if not candidates:
            return None
        for q in candidates:  # a queue that was idle re-enters at the others' pace, not with a backlog
            self._pass[q] = max(self._pass.get(q, self._virtual), self._virtual)
        chosen = min(candidates, key=lambda q: (self._pass[q], q))
        self._virtual = self._pass[chosen]
        self._pass[chosen] += 1.0 / max(weights.get(chosen, 1.0), 1e-6)
        return chosen

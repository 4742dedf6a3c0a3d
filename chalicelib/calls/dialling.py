"""What the launcher consults around each dial: which due job goes next (campaign shares), each campaign's
rules, the dial-time gate (do-not-call list, paused or stopped campaigns) and the events it emits."""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from chalicelib import logs
from chalicelib.calls import events as outcome_events
from chalicelib.calls import gate
from chalicelib.calls.campaigns import Campaign
from chalicelib.calls.jobs import Job
from chalicelib.calls.pacing import Shares
from chalicelib.logs import log

if TYPE_CHECKING:
    from chalicelib.calls.campaign_store import CampaignStore
    from chalicelib.calls.jobs import JobRepository

NO_CAMPAIGN = ""
LOOKAHEAD = 5000  # due jobs held in memory at most, so shares hold even when one campaign's jobs come first
LOOKAHEAD_SECONDS = 20.0  # ...and no more than this many seconds of dialling: every run reads its window anew
MIN_LOOKAHEAD = 200


def lookahead(cps: float) -> int:
    """How many due jobs a run reads ahead: 20 s of dialling (shares hold within it), 200 to 5 000. More
    is read and parsed for nothing at the start of every run (5 000 jobs are ~1 s of a Lambda's CPU)."""
    return int(min(LOOKAHEAD, max(MIN_LOOKAHEAD, cps * LOOKAHEAD_SECONDS)))


class Feeder:
    """Due jobs in due order, handed out by campaign weight (stride scheduling over what is read ahead).

    A reader thread reads the due pages ahead while jobs are handed out, so a page read never holds up a
    start (at CPS 50 a start is due every 20 ms, and a page can take longer than that). Reading ahead is
    bounded by `lookahead` items, so memory does not grow with the backlog; within that window a campaign
    gets starts in proportion to its weight, and one with no due jobs leaves its share."""

    def __init__(
        self, items: Iterator[Job], weight: Callable[[str], float], lookahead: int = LOOKAHEAD
    ) -> None:
        self._items = items
        self._weight = weight
        self._lookahead = lookahead
        self._queues: dict[str, deque[Job]] = {}
        self._held = 0
        self._exhausted = False
        self._closed = False
        self._error: Exception | None = None
        self._shares = Shares()
        self._changed = threading.Condition()
        self._reader: threading.Thread | None = None

    def _read_ahead(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._closed or self._held < self._lookahead)
                if self._closed:
                    return
            try:
                item = next(self._items)
            except StopIteration:
                self._finish(None)
                return
            except Exception as exc:  # noqa: BLE001 - a page failed: hand out what was read, then raise it
                self._finish(exc)
                return
            queue = str(item.get("campaign") or NO_CAMPAIGN)
            with self._changed:
                self._queues.setdefault(queue, deque()).append(item)
                self._held += 1
                self._changed.notify_all()

    def _finish(self, error: Exception | None) -> None:
        with self._changed:
            self._exhausted = True
            self._error = error
            self._changed.notify_all()

    def _start(self) -> None:
        if self._reader is None:
            self._reader = threading.Thread(target=self._read_ahead, name="due-reader", daemon=True)
            self._reader.start()

    def close(self) -> None:
        """Stop reading ahead (a page already asked for is read and dropped)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def __iter__(self) -> Iterator[Job]:
        return self

    def peek(self, count: int) -> list[Job]:
        """Up to `count` of the jobs read ahead and not yet handed out (any campaign), without taking them."""
        found: list[Job] = []
        with self._changed:
            for queue in self._queues.values():
                found += list(itertools.islice(queue, count - len(found)))
                if len(found) >= count:
                    break
        return found

    def __next__(self) -> Job:
        with self._changed:
            self._start()
            self._changed.wait_for(lambda: self._held > 0 or self._exhausted)
            if not self._held:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                raise StopIteration
            ready = [q for q, items in self._queues.items() if items]
            chosen = self._shares.pick(ready, {q: self._weight(q) for q in ready})
            assert chosen is not None
            self._held -= 1
            self._changed.notify_all()
            return self._queues[chosen].popleft()


class CampaignRules:
    """Each campaign's rules, read once per run (one GetItem per campaign seen)."""

    def __init__(self, store: CampaignStore | None) -> None:
        self.store = store
        self._cache: dict[str, Campaign | None] = {}
        self._lock = threading.Lock()

    def get(self, name: str | None) -> Campaign | None:
        if not name or self.store is None:
            return None
        with self._lock:
            if name in self._cache:
                return self._cache[name]
        found = self.store.get(name)
        with self._lock:
            self._cache[name] = found
        return found

    def weight(self, name: str) -> float:
        campaign = self.get(name) if name else None
        return campaign.weight if campaign else 1.0


class GateCache:
    """Dial-time verdicts no older than gate.CHECK_MAX_AGE: one BatchGetItem answers for every job that is
    waiting to dial at that moment, so the look-up costs about one request per CHECK_MAX_AGE seconds."""

    def __init__(self, source: gate.CheckSource | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._source = source
        self._clock = clock
        # The jobs the pass will dial next: a look-up has room for them too, so that a pass that is not
        # waiting on the rate limit (few jobs waiting at once) still pays one look-up per many calls. Their
        # verdicts are used only while at most CHECK_MAX_AGE old, like every other.
        self.upcoming: Callable[[int], list[gate.Candidate]] | None = None
        self._waiting: dict[str, gate.Candidate] = {}
        self._verdicts: dict[str, tuple[float, gate.Verdict]] = {}
        self._inflight: dict[str, threading.Event] = {}  # call_id -> the look-up on the way for it
        self._lock = threading.Lock()
        self.lookups = 0

    def register(self, candidate: gate.Candidate) -> None:
        with self._lock:
            self._waiting[candidate.call_id] = candidate

    def done(self, call_id: str) -> None:
        with self._lock:
            self._waiting.pop(call_id, None)
            self._verdicts.pop(call_id, None)

    def verdict(self, candidate: gate.Candidate) -> gate.Verdict:
        """The gate's verdict for `candidate`, read at most CHECK_MAX_AGE ago (a look-up that took longer
        than that is made again: what it read may predate a `dnc add` that has returned since)."""
        if self._source is None:
            return gate.Verdict.DIAL
        while True:
            now = self._clock()
            with self._lock:
                cached = self._verdicts.get(candidate.call_id)
                if cached and now - cached[0] <= gate.CHECK_MAX_AGE:
                    return cached[1]
                pending = self._inflight.get(candidate.call_id)
                if pending is None:  # no look-up on the way answers for it: this worker makes one
                    self._waiting[candidate.call_id] = candidate
                    batch = [c for c in self._waiting.values() if c.call_id not in self._inflight]
                    batch = batch[: gate.BATCH_MAX]
                    if candidate not in batch:
                        batch[-1] = candidate
            if pending is not None:
                pending.wait(5.0)  # one look-up at a time answers for a job
                continue
            self._look_up(batch)

    def _look_up(self, batch: list[gate.Candidate]) -> None:
        assert self._source is not None
        room = gate.BATCH_MAX - len(batch)
        if room > 0 and self.upcoming is not None:
            seen = {c.call_id for c in batch}
            batch += [c for c in self.upcoming(2 * room) if c.call_id not in seen][:room]
        finished = threading.Event()
        with self._lock:
            for c in batch:
                self._inflight.setdefault(c.call_id, finished)
        checked_at = self._clock()
        try:
            found = gate.check(self._source, batch)
            with self._lock:
                self.lookups += 1
                for call_id, verdict in found.items():
                    self._verdicts[call_id] = (checked_at, verdict)
        finally:
            with self._lock:
                for c in batch:
                    if self._inflight.get(c.call_id) is finished:
                        del self._inflight[c.call_id]
            finished.set()


class EventSink:
    """Events of the run, sent in PutEvents batches of 10 after their state is stored; what EventBridge
    refuses goes to the job's outbox for the next run."""

    def __init__(self, publisher: outcome_events.Publisher | None, repo: JobRepository) -> None:
        self.publisher = publisher
        self._repo = repo
        self._pending: list[outcome_events.Event] = []
        self._lock = threading.Lock()
        self.sent = 0
        self.deferred = 0

    def emit(self, job: Any) -> None:
        if self.publisher is None:
            return
        event = outcome_events.for_status(job)
        if event is None:
            return
        with self._lock:
            self._pending.append(event)
            ready = len(self._pending) >= outcome_events.BATCH
            batch = self._pending if ready else []
            if ready:
                self._pending = []
        if batch:
            self._send(batch)

    def flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        if batch:
            self._send(batch)

    def _send(self, batch: list[outcome_events.Event]) -> None:
        assert self.publisher is not None
        refused = self.publisher.publish(batch)
        with self._lock:
            self.sent += len(batch) - len(refused)
            self.deferred += len(refused)
        for event in refused:
            try:
                self._repo.defer_event(str(event.detail["call_id"]), event)
            except Exception as exc:  # noqa: BLE001 - logged; the job's state is stored, only the event is late
                log.error(
                    "event neither sent nor kept", call_id=event.detail["call_id"], cause=logs.cause(exc)
                )

    def drain(self, limit: int = 500) -> int:
        """Re-send what earlier runs could not (the outbox); how many were delivered."""
        if self.publisher is None:
            return 0
        delivered = 0
        for item in self._repo.outbox_jobs(limit):
            stored = item.get("outbox") or {}
            events = [outcome_events.Event.from_stored(k, v) for k, v in sorted(stored.items())]
            if not events:  # emptied by an earlier drain whose last step did not land
                self._repo.clear_events(item["call_id"], [], all_sent=True)
                continue
            refused = {e.id for e in self.publisher.publish(events)}
            sent = [e.id for e in events if e.id not in refused]
            if sent:
                self._repo.clear_events(item["call_id"], sent, all_sent=not refused)
                delivered += len(sent)
        return delivered

"""The launcher: dial the due call jobs at the account's calls-per-second, each exactly once.

One pass reads due jobs from the GSI page by page, claims each with a conditional update, validates it,
waits for a rate-limit slot and posts it to Plivo from a bounded pool of workers (so request latency
overlaps), then records the outcome. Anything it does not reach stays `pending` for the next run.
"""

from __future__ import annotations

import gc
import math
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from chalicelib import logs, metrics
from chalicelib.calls import campaigns as campaign_rules
from chalicelib.calls import dialling, gate, numbers, plivo_api, schedule
from chalicelib.calls import pacing as pacing_module
from chalicelib.calls.call_body import JobInvalid, build_call_body, number_problems, whole_number
from chalicelib.calls.dialling import CampaignRules, EventSink, Feeder, GateCache
from chalicelib.calls.jobs import Job, JobStatus
from chalicelib.calls.plivo_api import Outcome
from chalicelib.logs import log
from chalicelib.settings import Settings

if TYPE_CHECKING:
    from chalicelib.calls.campaign_store import CampaignStore
    from chalicelib.calls.events import Publisher
    from chalicelib.calls.jobs import JobRepository
    from chalicelib.calls.pacing import Lease
    from chalicelib.calls.plivo_api import PlivoClient


SUMMARY_KEYS = ("due", "placed", "deferred", "failed", "unknown", "skipped")  # the SPEC's summary
MOVED_KEYS = ("placed", "deferred", "failed", "unknown", "cancelled", "parked")
EXPECTED_LATENCY = 1.5  # seconds of Plivo latency the worker pool is sized to hide
MAX_WORKERS = 100
STALE_DIALING_SECONDS = 600.0
RUN_BUDGET_SECONDS = 55.0  # stop starting calls before the next scheduled run starts: runs never stack CPS
SAFETY_SECONDS = 2.0
MAX_PASSES = 3
SETTLE_EVERY_MINUTES = 5
WARM_UP_ID = "#warm-up"  # the made-up call a run plans (never dials) before its first real one
WARM_UP_NUMBERS = ("14155550100", "14155550101")  # to, from
SEND_EARLY = 0.01  # seconds a start is granted ahead; the request waits at the socket for the rest
HANDOVER_SEND_WAIT = 4.0  # seconds a hand-over waits for requests already let through (connect timeout)


class Grant:
    """One start taken from a RateLimiter. Until `sent` stamps it, it counts as starting right now (in
    other grants' holds, once through its own): a worker can trail its grant by tens of milliseconds under
    CPU load, and a start counts from the moment its request is on the wire (as Plivo sees it)."""

    __slots__ = ("_late", "_limiter", "released", "sent_at")

    def __init__(
        self, limiter: RateLimiter, sent_at: float | None = None, late: float = 0.0, released: bool = True
    ) -> None:
        self._limiter = limiter
        self.sent_at = sent_at
        self._late = late
        self.released = released  # through `hold`: the window counts it from now on

    def hold(self) -> None:
        """Wait until the window lets this start go on the wire, then count it as starting: a limiter
        with `early` grants up to that much ahead, and only this check, right before the request is
        written, keeps the window."""
        self._limiter._hold(self)

    def sent(self) -> None:
        """Stamp the start now (once; later calls keep the first stamp)."""
        with self._limiter._lock:
            if self.sent_at is None:
                self.sent_at = self._limiter._clock() + self._late
                self.released = True

    def cancel(self) -> None:
        """The call did not start after all: give the start back."""
        with self._limiter._lock:
            if self.sent_at is None and self in self._limiter._starts:
                self._limiter._starts.remove(self)


class RateLimiter:
    """Never more than `capacity` starts within any `period` seconds, paced rather than in bursts.

    Callers queue in order; only the head of the queue watches the clock, so waiting workers cost
    nothing. A start counts from its Grant's `sent` stamp (and as "now" until then), so the window holds
    between requests on the wire, however late a worker sends after its grant. `period` carries a small
    margin for the jitter between the socket and Plivo's clock; `spacing` is a little shorter than the
    average gap, so the window stays the binding limit and a late wake-up costs no throughput. The first
    `capacity` starts of a run go out on new connections, which the server reads later than a kept-alive
    one's, so they count as `cold_start` later: the next second's starts on warm connections cannot
    overtake them. With `early`, a start is granted that much before the window allows it and its
    Grant's `hold`, right before the request is written, waits for the rest: the few milliseconds from a
    grant to the socket then no longer add to every window (CPS 50 bench: median window 1.019-1.025 ->
    1.013-1.015 s).
    """

    PACE = 0.9
    PREPARE_LEAD = 0.15

    def __init__(
        self,
        cps: float,
        margin: float = 0.01,
        cold_start: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        early: float = 0.0,
    ) -> None:
        if cps >= 1:
            self.capacity, self.period = int(cps), 1.0 + margin
        else:
            self.capacity, self.period = 1, 1.0 / cps + margin
        self.spacing = self.PACE * self.period / self.capacity
        self.cold_start = cold_start
        self.early = early
        self._granted = 0
        self._starts: list[Grant] = []
        self._last = float("-inf")
        self._queue: deque[threading.Event] = deque()
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep

    def seed(self, starts: list[float]) -> None:
        """Count starts made elsewhere (another run, before a hand-over; `clock` times) as this limiter's.
        They were stamped on the wire by their own run; this run's first starts still go out on new
        connections and count `cold_start` late (counting them warm let 51 starts into one second at a
        CPS-50 hand-over)."""
        with self._lock:
            for start in sorted(starts):
                self._starts.append(Grant(self, start))
                self._last = max(self._last, start)

    def acquire(
        self, cancelled: threading.Event | None = None, prepare: Callable[[], object] | None = None
    ) -> Grant | None:
        """Wait for a start and take it; None if `cancelled` was set while waiting. The caller stamps the
        Grant when its request is sent, or cancels it if the call does not start.

        `prepare` (the dial-time check) runs at the head of the queue once the start is less than PREPARE_LEAD
        away, and again whenever a wait followed it: the start is granted right after `prepare` returns, so
        nothing slow sits between a grant and the request, and what `prepare` found is fresh at the start.
        """
        turn = threading.Event()
        with self._lock:
            self._queue.append(turn)
            if self._queue[0] is turn:
                turn.set()
        try:
            while not turn.wait(0.25):
                if cancelled is not None and cancelled.is_set():
                    return None
            while True:
                with self._lock:
                    wait = self._wait(self._clock())
                prepared = prepare is None or wait <= self.PREPARE_LEAD
                if prepare is not None and prepared:
                    prepare()
                with self._lock:
                    now = self._clock()
                    wait = self._wait(now)
                    if wait <= 0 and prepared:  # never a grant whose check did not run (a late wake-up)
                        cold = self._granted < self.capacity
                        grant = Grant(self, late=self.cold_start if cold else 0.0, released=not self.early)
                        self._granted += 1
                        self._starts.append(grant)
                        self._last = now
                        return grant
                if cancelled is not None and cancelled.is_set():
                    return None
                self._sleep(max(0.0, min(wait, 0.25)))
        finally:
            with self._lock:
                self._queue.remove(turn)
                if self._queue:
                    self._queue[0].set()

    def _wait(self, now: float) -> float:
        """Seconds until the next grant: the spacing after the last one, and the window (`early` ahead)."""
        return max(self._last + self.spacing - now, self._window_wait(now) - self.early)

    def _window_wait(self, now: float, own: Grant | None = None) -> float:
        """Seconds until one more start fits the window of the others (unsent ones as starting now).
        For `own`, a grant in its hold, the others are those already through theirs: whichever of two
        grants passes its hold second counts the first, so every window is checked by its last start."""
        horizon = now - self.period
        self._starts = [g for g in self._starts if g.sent_at is None or g.sent_at > horizon]
        recent = sorted(
            now if g.sent_at is None else g.sent_at
            for g in self._starts
            if own is None or (g is not own and g.released)
        )
        if len(recent) < self.capacity:
            return float("-inf")
        return recent[-self.capacity] + self.period - now

    def _hold(self, grant: Grant) -> None:
        while True:
            with self._lock:
                if grant.released:
                    return
                wait = self._window_wait(self._clock(), grant)
                if wait <= 0:
                    grant.released = True
                    return
            self._sleep(wait)


def config_problems(settings: Settings) -> list[str]:
    """The launcher's settings that cannot work, one readable sentence each (empty when all can). A bad
    setting would fail every job alike, so the run stops instead and the jobs wait for the fix."""
    problems: list[str] = []
    if not settings.public_base_url:
        problems.append("PUBLIC_BASE_URL is not set")
    elif not settings.public_base_url.lower().startswith(("https://", "http://")):
        problems.append(f"PUBLIC_BASE_URL {settings.public_base_url!r} is not an http(s) URL")
    for name, check, value in (
        ("CALL_WINDOW", schedule.parse_window, settings.call_window),
        ("DEFAULT_TZ", schedule.zone, settings.default_tz),
    ):
        try:
            check(value)
        except schedule.WindowError as exc:
            problems.append(f"{name}: {exc}")
    if not settings.retry_delays:
        problems.append("RETRY_DELAYS is empty")
    return problems


def worker_count(cps: float) -> int:
    """Enough workers to keep CPS starts going while each waits EXPECTED_LATENCY for Plivo, bounded."""
    return max(2, min(MAX_WORKERS, math.ceil(cps * EXPECTED_LATENCY) + 2))


class Launcher:
    """One launcher pass over the jobs in `repo`, dialling through `plivo` (a PlivoClient)."""

    def __init__(
        self,
        repo: JobRepository,
        plivo: PlivoClient,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        remaining_ms: Callable[[], int] | None = None,
        workers: int | None = None,
        run_budget: float | None = None,
        stale_after: float = STALE_DIALING_SECONDS,
        page_size: int = 100,
        limiter: RateLimiter | None = None,
        campaigns: CampaignStore | None = None,
        lease: Lease | None = None,
        publisher: Publisher | None = None,
    ) -> None:
        self.repo = repo
        self.plivo = plivo
        self.settings = settings
        self.clock = clock
        self.remaining_ms = remaining_ms
        self.workers = workers or worker_count(settings.plivo_cps)
        self.run_budget = run_budget
        self.stale_after = stale_after
        self.page_size = page_size
        self.limiter = limiter or RateLimiter(settings.plivo_cps, early=SEND_EARLY)
        self.problems = config_problems(settings)
        self.public_base_url = settings.public_base_url or ""
        self.local = settings.local_stage
        self.counts: Counter[str] = Counter({key: 0 for key in SUMMARY_KEYS})
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.stop_reason: str | None = None
        self.rules = CampaignRules(campaigns)
        self.gate = GateCache(campaigns)
        self.lease = lease
        self.events = EventSink(publisher, repo)
        self._latencies: list[float] = []
        self._handed: dict[str, Job] = {}  # handed to a worker, not finished: the gate checks them ahead
        self._first_start: float | None = None
        self._recent_starts: deque[float] = deque(maxlen=pacing_module.RECENT_STARTS)  # wall clock
        self._stop_starting_at = float("inf")  # the announced hand-over: no call starts after it
        self._unsent: set[str] = set()  # handed to a worker; its call has neither started nor ended
        self._handing_over = False  # enough is handed out to dial until the hand-over: no more claims
        self._released = False
        self._sending = 0  # calls past the last check whose request is not on the wire yet
        self._all_sent = threading.Condition(self._lock)
        # Time a claimed job may still need: a rate-limit wait, one full request, the result write.
        wait = self.workers / settings.plivo_cps
        request = plivo.max_request_seconds
        self.reserve_ms = (wait + request + SAFETY_SECONDS) * 1000.0

    # --- the pass --------------------------------------------------------------------------------

    def run(self) -> dict[str, int]:
        """One pass; the SPEC summary. While it runs it changes process-wide state, restored on return:
        it collects and freezes the garbage collector (`gc.freeze`) and shortens the interpreter's
        thread switch interval to 1 ms (`sys.setswitchinterval`). Other threads in the process feel both."""
        # A full collection over boto3's models can pause every thread for 100+ ms, long enough to bunch
        # requests together at Plivo; collect once now and keep today's objects out of later collections.
        # Likewise a thread that is ready to send should not wait the default 5 ms for the GIL.
        gc.collect()
        gc.freeze()
        switch = sys.getswitchinterval()
        sys.setswitchinterval(min(switch, 0.001))
        try:
            return self._run()
        finally:
            sys.setswitchinterval(switch)
            gc.unfreeze()

    def _run(self) -> dict[str, int]:
        started = self.clock()
        problems = self.problems + self._time_problems()
        if problems:
            # One ERROR, no job touched: the operator fixes the setting and the next run dials them all.
            self.stop_reason = "configuration error"
            log.error("launcher configuration error; no job touched", cause="; ".join(problems))
            return {key: 0 for key in SUMMARY_KEYS}
        swept: list[bool] = []

        def sweep() -> None:  # what needs no lease; a waiting run does it before its turn
            swept.append(True)
            self._expire_stale(started)
            self._settle_stuck(started)
            self._warm_up()

        if self.lease is not None and not self._take_lease(started, sweep):
            return {key: 0 for key in SUMMARY_KEYS}
        if not swept:
            sweep()
        self._drain_events()  # only the holder drains the outbox: two drains could send an event twice
        self.plivo.ensure_pool(self.workers)
        slots = threading.Semaphore(self.workers)
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="dial") as pool:
                # Another pass picks up a job the paginated read skipped while the index changed under
                # it (ties on due_at); handled jobs have left `pending` or moved past `started`.
                # Holding the lease, the run keeps dialling while due jobs keep coming and time remains.
                for _ in range(MAX_PASSES if self.lease is None else 100_000):
                    moved = self._moved()
                    if not self._pass(pool, slots, started):
                        break
                    for _ in range(self.workers):  # wait until this pass's jobs are done
                        slots.acquire()
                    for _ in range(self.workers):
                        slots.release()
                    if self._moved() == moved:
                        # Every job it handed out is still due and unchanged (DynamoDB refused the
                        # claims): another pass now would only hammer it again. The next run retries.
                        self.stop_reason = self.stop_reason or "no due job could be claimed"
                        log.warning("launcher run ends: a pass changed no job", reason=self.stop_reason)
                        break
        finally:
            self.events.flush()
            self._release_lease()
            summary = {key: self.counts[key] for key in SUMMARY_KEYS}
            self._emit_metrics(summary)
            log.info(
                "launcher run finished",
                summary=summary,
                seconds=round(self.clock() - started, 3),
                stopped=self.stop_reason,
                cancelled=self.counts["cancelled"],
                cps=self.settings.plivo_cps,
                workers=self.workers,
            )
        return summary

    def _time_problems(self) -> list[str]:
        """A run that could not dial even one call in the time it has (PLIVO_CPS far too low for the Lambda
        timeout, or a timeout far too short) is a configuration error, not a quiet empty run."""
        if self.remaining_ms is not None:  # a rate-limit wait, the request and the write must fit
            available, what = self.remaining_ms() / 1000.0, "the Lambda's remaining time"
            needed = self.reserve_ms / 1000.0
        elif self.run_budget is not None:  # the rate-limit wait alone must fit
            available, what = self.run_budget, "the run budget"
            needed = self.workers / self.settings.plivo_cps
        else:
            return []
        if needed <= available:
            return []
        return [
            f"PLIVO_CPS {self.settings.plivo_cps:g} with {self.workers} workers needs {needed:.1f} s for one "
            f"call, more than {what} ({available:.1f} s)"
        ]

    def _pass(self, pool: ThreadPoolExecutor, slots: threading.Semaphore, started: float) -> int:
        """Hand every due pending job to the workers; how many were handed out."""
        handed = 0
        feeder: Feeder | None = None
        try:
            due = self.repo.query_status(JobStatus.PENDING, due_before=self.clock(), page_size=self.page_size)
            feeder = Feeder(due, self.rules.weight, dialling.lookahead(self.settings.plivo_cps))
            self.gate.upcoming = lambda count: [
                c for c in map(self._candidate, self._next_jobs(feeder, count)) if c is not None
            ]
            for item in feeder:
                if self._should_stop(started) or self._enough_until_handover():
                    return 0
                slots.acquire()
                if self._should_stop(started) or self._enough_until_handover():
                    slots.release()
                    return 0
                with self._lock:
                    self._handed[item["call_id"]] = item
                    self._unsent.add(item["call_id"])
                pool.submit(self._handle_slot, item, started, slots)
                handed += 1
        except Exception as exc:  # noqa: BLE001 - DynamoDB refused a page: finish what is claimed, report, stop
            log.error(
                "cannot read due jobs; the rest stay pending",
                cause=logs.cause(exc),
            )
            self.stop_reason = self.stop_reason or "due jobs could not be read"
            return 0  # jobs already handed out still go ahead
        finally:
            if feeder is not None:
                feeder.close()
        return handed

    def _candidate(self, job: Job) -> gate.Candidate | None:
        """What the gate checks for a job read ahead (None: its number is not one; its claim fails it)."""
        to = job.get("to")
        if not isinstance(to, str):
            return None
        try:
            number = to if to.startswith("sip") else numbers.normalize(to)
        except numbers.NumberError:
            return None
        return gate.Candidate(job["call_id"], number, job.get("campaign") or None)

    def _should_stop(self, started: float) -> bool:
        if self._stop.is_set():
            return True
        if self.remaining_ms is not None and self.remaining_ms() < self.reserve_ms:
            self._halt("lambda time running out")
        elif self.run_budget is not None and self.clock() - started >= self.run_budget:
            self._halt("run budget used")
        return self._stop.is_set()

    def _halt(self, reason: str, error: bool = False) -> bool:
        """Stop claiming; True for the call that stopped the run (the others find it stopped)."""
        with self._lock:
            if self._stop.is_set():
                return False
            self.stop_reason = reason
            self._stop.set()
        (log.error if error else log.info)("launcher stops claiming jobs", reason=reason)
        self._release_lease()  # no call starts from here on: the next run may take over now
        return True

    def _moved(self) -> int:
        """Jobs this run has moved on: placed, deferred, failed, unknown, or held back by the gate."""
        with self._lock:
            return sum(self.counts[key] for key in MOVED_KEYS)

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    # --- one job ---------------------------------------------------------------------------------

    def _handle_slot(self, item: Job, started: float, slots: threading.Semaphore) -> None:
        call_id = item["call_id"]
        try:
            self._handle(item, started)
        except Exception as exc:  # noqa: BLE001 - one job's trouble never ends the pass; the sweep settles a stuck job
            self._count("skipped")
            log.error(
                "launcher job error",
                call_id=call_id,
                cause=logs.cause(exc),
            )
        finally:
            with self._lock:
                self._handed.pop(call_id, None)
            self._not_waiting(call_id)
            slots.release()

    def _next_jobs(self, feeder: Feeder, count: int) -> list[Job]:
        """The jobs this run dials next: handed to a worker (in hand-out order), then those read ahead."""
        with self._lock:
            handed = list(self._handed.values())[:count]
        return handed + feeder.peek(count - len(handed))

    def _handle(self, item: Job, started: float) -> None:
        if self._stop.is_set():
            return
        self._count("due")
        call_id = item["call_id"]
        problem = self._count_problem(item)
        if problem:  # before the claim: it cannot count a string, and must never dial past max_attempts
            if self.repo.fail_pending(call_id, self.clock(), f"invalid job: {problem}"):
                self._count("failed")
                log.warning("invalid job not dialled", call_id=call_id, cause=problem)
            else:
                self._count("skipped")
            return
        job = self.repo.claim(call_id, self.clock())
        if job is None:
            self._count("skipped")  # another run took it, or it changed since the query
            return
        now = self.clock()
        campaign = self.rules.get(job.get("campaign"))
        try:
            dialled, body, opening = self._plan(job, campaign, now)
        except (schedule.WindowError, JobInvalid) as exc:
            self._finish(call_id, "failed", JobStatus.FAILED, last_error=f"invalid job: {exc}", job=job)
            log.warning("invalid job not dialled", call_id=call_id, cause=str(exc))
            return
        if opening > now:
            self._finish(call_id, "deferred", JobStatus.PENDING, due_at=opening)
            return
        candidate = gate.Candidate(call_id, str(body["to"]), job.get("campaign") or None)
        self.gate.register(candidate)
        try:
            prepared = self.plivo.prepare_call(body)
            verdicts: list[gate.Verdict] = []

            def check() -> None:  # at the head of the rate limiter's queue, right before the grant
                verdicts[:] = [self.gate.verdict(candidate)]

            grant = None
            if not self._stop.is_set() and self._start_allowed():
                grant = self.limiter.acquire(self._stop, check)
            if grant is None:
                self._finish(call_id, "skipped", JobStatus.PENDING)
                return
            verdict = verdicts[0]  # at most gate.CHECK_MAX_AGE old when the call starts
            if verdict != gate.Verdict.DIAL:
                grant.cancel()
                self._held_back(call_id, job, verdict)
                return
            if not self._may_start_now():
                grant.cancel()
                self._finish(call_id, "skipped", JobStatus.PENDING)
                return

            def on_sent() -> None:
                grant.sent()
                self._started_at(time.time())
                self._not_waiting(call_id)

            sent = time.monotonic()
            try:
                result = self.plivo.create_call(prepared=prepared, on_sent=on_sent, before_send=grant.hold)
            finally:
                if grant.sent_at is None:  # no stamp from the transport (it failed early): count it now
                    on_sent()
        finally:
            self.gate.done(call_id)
        with self._lock:
            self._latencies.append(time.monotonic() - sent)
            if self._first_start is None:
                self._first_start = sent
        self._record(call_id, job, result)

    def _plan(
        self, job: Job, campaign: campaign_rules.Campaign | None, now: float
    ) -> tuple[Job, dict[str, Any], float]:
        """The job as dialled, its Call API body and the first moment it may start; JobInvalid or
        WindowError when it cannot be dialled."""
        dialled = self._with_campaign(job, campaign)
        body = build_call_body(dialled, self.public_base_url, local=self.local)  # checks window and tz too
        opening = self._next_allowed(dialled, campaign, now)
        problem = self._count_problem(dialled, claimed=True)
        if problem:
            raise JobInvalid(problem)
        return dialled, body, opening

    def _warm_up(self) -> None:
        """Plan and prepare one made-up call, dialling nothing. A waiting run's first call after the
        hand-over otherwise pays this process's first use of phonenumbers' metadata, the zone data and
        the request machinery (160 ms measured under load), as a gap between two holders' calls."""
        to, caller = WARM_UP_NUMBERS
        sample: dict[str, Any] = {"call_id": WARM_UP_ID, "to": to, "from": caller}
        try:
            _, body, _ = self._plan(sample, None, self.clock())  # type: ignore[arg-type]
            self.plivo.prepare_call(body)
        except Exception as exc:  # noqa: BLE001 - only a warm-up: the real calls report their own problems
            log.debug("warm-up call not planned", cause=logs.cause(exc))

    def _with_campaign(self, job: Job, campaign: campaign_rules.Campaign | None) -> Job:
        """The job as it is dialled: its own fields first, then its campaign's rules; `to` normalized."""
        dialled: dict[str, Any] = dict(job)
        if campaign is not None:
            for field, value in (
                ("window", campaign.window),
                ("max_attempts", campaign.max_attempts),
                ("machine_detection", campaign.machine_detection),
                ("from", campaign.caller_id),
            ):
                if dialled.get(field) in (None, "") and value is not None:
                    dialled[field] = value
        to = dialled.get("to")
        if isinstance(to, str) and not to.startswith("sip"):
            try:
                dialled["to"] = numbers.normalize(to)
            except numbers.NumberError as exc:
                raise JobInvalid(str(exc)) from None
        return dialled  # type: ignore[return-value]

    def _zones(self, job: Job, campaign: campaign_rules.Campaign | None) -> list[str]:
        """The callee's zone: the job's tz, else the campaign's, else every zone the number may be in."""
        tz = job.get("tz") or (campaign.tz if campaign else None)
        if tz:
            return [tz]
        to = str(job.get("to") or "")
        zones = list(numbers.zones_for(to)) if to.isdigit() else []
        return zones or [self.settings.default_tz]

    def _next_allowed(self, job: Job, campaign: campaign_rules.Campaign | None, now: float) -> float:
        window = job.get("window") or self.settings.call_window
        zones = self._zones(job, campaign)
        for zone in zones:
            schedule.zone(zone)  # a bad tz is the job's own problem: WindowError
        if campaign is None:
            moment = campaign_rules.next_allowed(now, window, zones)
        else:
            moment = campaign_rules.next_allowed(
                now, window, zones, campaign.days, campaign.blackout, campaign.tz
            )
        if moment is None:
            raise JobInvalid(
                f"no moment is inside the calling window {window} in every zone of {', '.join(zones)}"
            )
        return moment

    def _held_back(self, call_id: str, job: Job, verdict: gate.Verdict) -> None:
        """The gate said no at dial time: the attempt is given back, nothing was dialled."""
        campaign = job.get("campaign")
        if verdict == gate.Verdict.DO_NOT_CALL:
            reason = "not dialled: the number is on the do-not-call list"
            self._finish(call_id, "skipped", JobStatus.CANCELLED, last_error=reason, job=job)
        elif verdict == gate.Verdict.PAUSED:
            self._finish(call_id, "skipped", JobStatus.PENDING, park=True)
            self._count("parked")
            return
        else:
            reason = f"not dialled: campaign {campaign} was stopped"
            self._finish(call_id, "skipped", JobStatus.CANCELLED, last_error=reason, job=job)
        self._count("cancelled")  # the summary counts it as skipped; metrics and the log line apart
        log.info("call held back at dial time", call_id=call_id, reason=str(verdict))

    def _start_allowed(self) -> bool:
        """With the lease: still held, and the previous holder's last start is far enough behind."""
        if self.lease is None:
            return True
        if not self.lease.still_held():
            self._halt("the dialling lease was lost to another run")
            return False
        if time.time() >= self._stop_starting_at:
            self._halt("dialling handed over to the next run")
            return False
        return True

    def _enough_until_handover(self) -> bool:
        """True once the jobs handed out and not started fill the time left before the hand-over: claiming
        more would only give them back then (two wasted writes each, in a burst that delays the next
        holder's takeover). The lease is released when the last of them has started."""
        if self.lease is None or self._stop_starting_at == float("inf"):
            return False
        with self._lock:
            if not self._handing_over:
                waiting = len(self._unsent) + 1
                self._handing_over = time.time() + waiting / self.settings.plivo_cps >= self._stop_starting_at
            if not self._handing_over:
                return False
            self.stop_reason = self.stop_reason or "dialling handed over to the next run"
            done = not self._unsent
        if done:
            self._release_lease()
        return True

    def _not_waiting(self, call_id: str) -> None:
        """The job's call started, or the job ended without one; the last of them hands the lease over."""
        with self._lock:
            self._unsent.discard(call_id)
            last = self._handing_over and not self._unsent and not self._released
        if last:
            log.info("launcher hands the dialling lease over", reason="its last handed-out call started")
            self._release_lease()

    def _may_start_now(self) -> bool:
        """The last check before a call starts: not past the hand-over. A call it lets through is sending
        until `_started_at`, and a hand-over waits for it."""
        with self._lock:
            allowed = time.time() < self._stop_starting_at
            if allowed:
                self._sending += 1
        if not allowed:
            self._halt("dialling handed over to the next run")
        return allowed

    def _started_at(self, wall_time: float) -> None:
        """A call's request is on the wire: the next lease holder counts this start against its window."""
        with self._lock:
            self._recent_starts.append(wall_time)
            self._sending -= 1
            self._all_sent.notify_all()

    def _release_lease(self) -> None:
        """Stop starting calls, then hand the lease over with the last start times (once)."""
        if self.lease is None:
            return
        with self._lock:
            if self._released or self.lease.held_until == 0.0 and not self._recent_starts:
                self._released = True
                return
            self._released = True
            self._stop_starting_at = min(self._stop_starting_at, time.time())
            # the starts the next holder counts include every call already let through
            self._all_sent.wait_for(lambda: self._sending <= 0, timeout=HANDOVER_SEND_WAIT)
            starts = list(self._recent_starts)
        try:
            self.lease.release(starts)
        except Exception as exc:  # noqa: BLE001 - the lease then expires on its own
            log.warning("dialling lease not released; it expires by itself", cause=logs.cause(exc))

    def _count_problem(self, job: Job, claimed: bool = False) -> str | None:
        """What forbids counting another attempt on this job: malformed numbers, or no attempt left."""
        problems = number_problems(job)
        if problems:
            return "; ".join(problems)
        attempts = whole_number(job.get("attempts")) or 0
        limit = whole_number(job.get("max_attempts")) or self.settings.max_attempts
        if attempts + (0 if claimed else 1) > limit:
            return f"attempts {attempts} leaves no attempt of max_attempts {limit}"
        return None

    def _record(self, call_id: str, job: Job, result: plivo_api.CallResult) -> None:
        now = self.clock()
        fields: dict[str, Any] = {"call_id": call_id, "http_status": result.status}
        if result.outcome == Outcome.PLACED:
            self._count("placed")
            try:
                self.repo.mark_placed(
                    call_id,
                    now,
                    result.request_uuid,
                    result.api_id,
                    attempt=whole_number(job.get("attempts")) or 0,
                    request_uuids=job.get("request_uuids"),
                )
            except Exception as exc:  # noqa: BLE001 - the call exists: never release it for another dial
                log.error(
                    "call placed but not recorded; a later run marks it unknown",
                    request_uuid=result.request_uuid,
                    cause=logs.cause(exc),
                    **fields,
                )
                return
            log.info(
                "call placed",
                request_uuid=result.request_uuid,
                api_id=result.api_id,
                **fields,
            )
            self.events.emit({**job, "status": "placed", "request_uuid": result.request_uuid})
        elif result.outcome == Outcome.RETRY:
            errors = (whole_number(job.get("transient_errors")) or 0) + 1
            if errors >= schedule.MAX_TRANSIENT_ERRORS:  # Plivo keeps refusing this one: stop cycling
                message = f"gave up after {errors} transient errors in a row: {result.error}"
                self._finish(
                    call_id, "failed", JobStatus.FAILED, job=job, last_error=message, transient_error=True
                )
                log.error(
                    "call not placed, giving up",
                    cause=result.error,
                    transient_errors=errors,
                    **fields,
                )
                return
            due = now + schedule.transient_delay(errors)
            self._finish(
                call_id,
                "deferred",
                JobStatus.PENDING,
                due_at=due,
                last_error=result.error,
                transient_error=True,
            )
            log.warning(
                "call not placed, will retry",
                cause=result.error,
                due_at=round(due),
                **fields,
            )
        elif result.outcome == Outcome.UNKNOWN:
            self._finish(
                call_id, "unknown", JobStatus.UNKNOWN, job=job, last_error=result.error, count_attempt=True
            )
            log.error("call may or may not be placed", cause=result.error, **fields)
        elif result.outcome == Outcome.AUTH_ERROR:
            self._finish(call_id, "skipped", JobStatus.PENDING, last_error=result.error)
            self._halt("Plivo rejected the credentials (401)", error=True)
            log.error("Plivo authentication failed; run stopped", cause=result.error, **fields)
        elif result.outcome == Outcome.CONFIG_ERROR and result.status == 404 and self.counts["placed"]:
            # This run has placed calls through the same URL, so the URL is Plivo's: the 404 is this job's.
            self._finish(call_id, "failed", JobStatus.FAILED, job=job, last_error=result.error)
            log.warning("call rejected by Plivo", cause=result.error, **fields)
        elif result.outcome == Outcome.CONFIG_ERROR:
            # PLIVO_API_URL (a reply) or this environment (no reply: a CA bundle path that does not exist)
            # is wrong for every job: stop at the first, fail nothing.
            self._finish(call_id, "skipped", JobStatus.PENDING)
            if result.status is None:
                reason, cause = "the Call API request cannot be sent from here", str(result.error)
            else:
                reason = f"PLIVO_API_URL is not Plivo's Call API (HTTP {result.status})"
                cause = f"PLIVO_API_URL {self.plivo.base_url} answered: {result.error}"
            if self._halt(reason):
                log.error("launcher configuration error; run stopped", cause=cause, **fields)
        else:
            self._finish(call_id, "failed", JobStatus.FAILED, job=job, last_error=result.error)
            log.warning("call rejected by Plivo", cause=result.error, **fields)

    def _finish(
        self, call_id: str, counter: str, status: JobStatus, job: Job | None = None, **changes: Any
    ) -> None:
        """Release the claimed job to `status`; a terminal change is published once it is stored."""
        released = self.repo.release(call_id, self.clock(), status=status, **changes)
        self._count(counter)
        if released and job is not None and status != JobStatus.PENDING:
            self.events.emit({**job, "status": str(status), "last_error": changes.get("last_error")})

    # --- the lease, events and metrics -----------------------------------------------------------

    def _deadline(self, started: float) -> float:
        if self.remaining_ms is not None:
            return time.time() + max(0.0, self.remaining_ms() - self.reserve_ms) / 1000.0
        if self.run_budget is not None:
            return time.time() + self.run_budget
        return time.time() + RUN_BUDGET_SECONDS

    def _take_lease(self, started: float, before_turn: Callable[[], None] | None = None) -> bool:
        """Wait for the dialling lease (the holder hands it over when its time runs short); False: another
        run dials now and will hand over to somebody else, so this run has nothing to do. `before_turn`
        (the sweeps) runs shortly before the turn, as the waiter, so a hand-over does not wait for it."""
        assert self.lease is not None
        deadline = self._deadline(started)
        try:
            got = self.lease.wait_turn(deadline - 5.0, before_turn=before_turn, handover_at=deadline)
        except Exception as exc:  # noqa: BLE001 - without the lease no call may start; the next run retries
            log.error("cannot read the dialling lease; no call started", cause=logs.cause(exc))
            self.stop_reason = "dialling lease unavailable"
            return False
        if not got:
            self.stop_reason = "another launcher run is dialling"
            log.info("launcher run ends: another run holds the dialling lease")
            return False
        self._stop_starting_at = deadline  # announced with the take-over
        if self.lease.previous_starts:  # the previous holder's last second counts against this one's
            offset = time.monotonic() - time.time()
            self.limiter.seed([t + offset for t in self.lease.previous_starts])
        return True

    def _drain_events(self) -> None:
        try:
            delivered = self.events.drain()
        except Exception as exc:  # noqa: BLE001 - the outbox waits for the next run
            log.warning("event outbox not drained", cause=logs.cause(exc))
            return
        if delivered:
            log.info("events from the outbox delivered", events=delivered)

    def _emit_metrics(self, summary: dict[str, int]) -> None:
        for key, name in (
            ("placed", metrics.CALLS_PLACED),
            ("deferred", metrics.CALLS_DEFERRED),
            ("failed", metrics.CALLS_FAILED),
            ("unknown", metrics.CALLS_UNKNOWN),
        ):
            metrics.count(name, summary.get(key, 0))
        metrics.count(metrics.CALLS_CANCELLED, self.counts["cancelled"])
        with self._lock:
            latencies = sorted(self._latencies)
            first = self._first_start
        if latencies:
            metrics.value(metrics.PLIVO_LATENCY_P50, 1000 * latencies[len(latencies) // 2])
            metrics.value(
                metrics.PLIVO_LATENCY_P99,
                1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            )
        if first is not None and summary.get("placed"):
            span = max(time.monotonic() - first, 1.0)
            metrics.value(metrics.ACHIEVED_CPS, round(summary["placed"] / span, 3))
        if self.stop_reason and "401" in self.stop_reason:
            metrics.count(metrics.PLIVO_AUTH_ERRORS)
        if self.events.deferred:
            metrics.count(metrics.EVENTS_DEFERRED, self.events.deferred)

    # --- jobs whose run died between claim and result -------------------------------------------

    def _expire_stale(self, now: float) -> None:
        try:
            self._expire_stale_jobs(now)
        except Exception as exc:  # noqa: BLE001 - the sweep can wait for the next run; due calls cannot
            log.error("stale dialing jobs not checked", cause=logs.cause(exc))

    def _settle_stuck(self, now: float) -> None:
        """`placed` jobs whose hangup never came: settled from Plivo's call records, else `unknown`. They are
        hours overdue by then, so the runs that start in every SETTLE_EVERY_MINUTES-th minute look."""
        from chalicelib.calls.settle import settle_stuck

        if int(now // 60) % SETTLE_EVERY_MINUTES:
            return

        try:
            found = settle_stuck(
                self.repo,
                self.plivo,
                self.settings,
                now,
                campaigns=self.rules.get,
                publisher=self.events.publisher,
            )
        except Exception as exc:  # noqa: BLE001 - the sweep can wait for the next run; due calls cannot
            log.error("stuck placed jobs not checked", cause=logs.cause(exc))
            return
        if found.get("checked"):
            log.info("stuck placed jobs checked", summary=found)

    def _expire_stale_jobs(self, now: float) -> None:
        cutoff = now - self.stale_after
        for job in self.repo.query_status(JobStatus.DIALING, page_size=self.page_size):
            claimed = job.get("updated_at", job.get("due_at", 0))
            if claimed > cutoff:
                continue
            message = f"still dialing {round(now - claimed)} s after its claim; the call may have been placed"
            if self.repo.expire_dialing(job["call_id"], cutoff, now, message):
                self._count("due")
                self._count("unknown")
                log.error("stale dialing job marked unknown", call_id=job["call_id"])

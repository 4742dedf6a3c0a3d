"""A model-based test of the job lifecycle (Hypothesis stateful testing, issue 10).

Random interleavings of launcher passes, Plivo replies (placed, 429, 5xx, timeout with or without a call,
a slow reply recorded later), hangup callbacks (on time, late, duplicated, reordered, replayed from any
earlier attempt), crashes between claim and dial and between dial and record, cancels and the clock.
The real JobRepository on moto, the real Launcher pass and the real hangup recorder; Plivo is an
in-process fake that remembers every call it "placed", so the test knows the truth the job must reflect.

Invariants after every step: no job is dialled twice for one attempt; `unknown` is never re-dialled
(only its own attempt's callback can move it on); attempts never exceed max_attempts; a callback changes
a job only when it belongs to the job's current attempt, and then its outcome is recorded against that
attempt; no job is left `dialing` past the sweep.

500 examples by default (about a minute here); CALLFLOW_LONG=1 runs 5 000.
"""

from __future__ import annotations

import itertools
import logging
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from chalicelib import logs
from chalicelib.calls.hangup import CallStatus, record_hangup
from chalicelib.calls.jobs import JobError, JobRepository, JobStatus
from chalicelib.calls.launcher import Launcher, RateLimiter
from chalicelib.calls.plivo_api import CallResult, Outcome
from chalicelib.settings import Settings
from tests.calls.launcherlib import BASE, make_job

LONG = os.environ.get("CALLFLOW_LONG") == "1"
EXAMPLES = int(os.environ.get("CALLFLOW_MODEL_EXAMPLES", 5000 if LONG else 500))
STEPS = 8
SHRINK = LONG or os.environ.get("CALLFLOW_MODEL_SHRINK") == "1"
STALE = 600.0
START = 1_780_000_000.0

# How the fake Plivo answers one dial, and whether a call then exists.
MODES = (
    "placed",
    "placed",
    "placed",
    "429",
    "5xx",
    "timeout-call",
    "timeout-none",
    "crash-before",
    "crash-after",
    "slow",
)
REAL_CALL = {"placed", "timeout-call", "crash-after", "slow"}


class Crash(Exception):
    """The Lambda died here (the launcher's worker never gets to write)."""


@dataclass
class Call:
    call_id: str
    attempt: int
    request_uuid: str
    call_uuid: str
    status: str | None = None  # its final CallStatus, fixed at the first delivery (replays repeat it)


@dataclass
class SlowReply:
    call_id: str
    attempt: int
    request_uuid: str
    request_uuids: dict[str, str] | None


class ModelRepository(JobRepository):
    """The real repository; it also remembers each claim's result for the fake Plivo (saves a read)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.claimed: dict[str, Any] = {}

    def claim(self, call_id: str, now: float) -> Any:
        job = super().claim(call_id, now)
        if job is not None:
            self.claimed[call_id] = job
        return job


@dataclass
class FakePlivo:
    """The PlivoClient surface the launcher uses; answers from `modes`, then `placed`."""

    repo: ModelRepository
    modes: list[str] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    requests: list[tuple[str, int, str]] = field(default_factory=list)
    slow: list[SlowReply] = field(default_factory=list)
    counter: itertools.count[int] = field(default_factory=itertools.count)
    base_url: str = "https://plivo.invalid"
    max_request_seconds: float = 1.0

    def ensure_pool(self, size: int) -> None:
        pass

    def prepare_call(self, body: dict[str, Any]) -> dict[str, Any]:
        return body

    def create_call(
        self, body: Any = None, prepared: Any = None, on_sent: Any = None, before_send: Any = None
    ) -> CallResult:
        mode = self.modes.pop(0) if self.modes else "placed"
        call_id = parse_qs(urlsplit(prepared["hangup_url"]).query)["call_id"][0]
        job = self.repo.claimed[call_id]  # what this pass's claim returned: the job is dialing
        attempt = job["attempts"]
        self.requests.append((call_id, attempt, mode))
        if mode == "crash-before":
            raise Crash("died before the request left")
        n = next(self.counter)
        request_uuid = f"req-{n}"
        if mode in REAL_CALL:
            self.calls.append(Call(call_id, attempt, request_uuid, f"call-{n}"))
        if mode == "placed":
            return CallResult(Outcome.PLACED, 201, request_uuid, f"api-{n}")
        if mode == "429":
            return CallResult(Outcome.RETRY, 429, error="Plivo HTTP 429: too many requests")
        if mode == "5xx":
            return CallResult(Outcome.RETRY, 503, error="Plivo HTTP 503: unavailable")
        if mode.startswith("timeout"):
            return CallResult(Outcome.UNKNOWN, error="no reply within 10 s after sending")
        if mode == "slow":
            self.slow.append(SlowReply(call_id, attempt, request_uuid, job.get("request_uuids")))
        raise Crash(f"died after the request ({mode})")


class ModelLauncher(Launcher):
    def run(self) -> dict[str, int]:
        # The pass itself, without run()'s process-wide gc and switch-interval tuning (60 ms a pass).
        return self._run()


class Lifecycle(RuleBasedStateMachine):
    table: Any = None
    examples = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        self.now = START
        self.repo = ModelRepository(self.table, clock=lambda: self.now)
        self.plivo = FakePlivo(self.repo)
        self.prefix = f"m{next(self.examples)}-"
        self.ids: list[str] = []
        self.max_attempts: dict[str, int] = {}
        self.unknown_at: dict[str, int] = {}  # the attempt a job was last seen `unknown` at
        self.settled_unknown: set[tuple[str, int]] = set()  # unknown attempts their own callback settled
        self.dirty = True
        self.settings = Settings(
            public_base_url=BASE,
            plivo_cps=1000.0,
            max_attempts=3,
            retry_delays=(0, 120),
            call_window="00:00-00:00",
            default_tz="UTC",
        )

    @initialize(limits=st.lists(st.integers(1, 4), min_size=1, max_size=2))
    def add_jobs(self, limits: list[int]) -> None:
        for index, limit in enumerate(limits):
            call_id = f"{self.prefix}{index}"
            self.repo.add(make_job(call_id, due_at=self.now - 1, max_attempts=limit, to=f"1415555010{index}"))
            self.ids.append(call_id)
            self.max_attempts[call_id] = limit

    # --- rules ----------------------------------------------------------------------------------------

    @rule(modes=st.lists(st.sampled_from(MODES), max_size=3))
    def launcher_pass(self, modes: list[str]) -> None:
        self.dirty = True
        self.plivo.modes = list(modes)
        launcher = ModelLauncher(
            self.repo,
            self.plivo,  # type: ignore[arg-type]
            self.settings,
            clock=lambda: self.now,
            workers=1,
            stale_after=STALE,
            limiter=RateLimiter(1000.0),
        )
        launcher.run()
        for call_id in self.ids:  # the sweep ran at the start of the pass
            job = self.job(call_id)
            if job["status"] == JobStatus.DIALING:
                assert job["updated_at"] > self.now - STALE, f"{call_id} left dialing past the sweep"
        self.now += 1

    @rule(seconds=st.sampled_from([130, 700, 4000]))
    def tick(self, seconds: int) -> None:
        self.now += seconds

    @precondition(lambda self: self.plivo.calls)
    @rule(status=st.sampled_from(list(CallStatus)))
    def callback_on_time(self, status: CallStatus) -> None:
        """Plivo's hangup for the latest call (on time, or a repeat of it)."""
        self.deliver(self.plivo.calls[-1], status)

    @precondition(lambda self: self.plivo.calls)
    @rule(data=st.data(), status=st.sampled_from(list(CallStatus)))
    def callback_any(self, data: st.DataObject, status: CallStatus) -> None:
        """Plivo's hangup for any call it ever placed: late, reordered, repeated or replayed."""
        self.deliver(data.draw(st.sampled_from(self.plivo.calls)), status)

    def deliver(self, call: Call, status: CallStatus) -> None:
        self.dirty = True
        if call.status is None:
            call.status = str(status)
        before = self.job(call.call_id)
        params = {
            "CallUUID": call.call_uuid,
            "RequestUUID": call.request_uuid,
            "CallStatus": call.status,
            "HangupCause": "X",
            "Duration": "3",
            "Event": "Hangup",
        }
        record_hangup(self.repo, self.settings, call.call_id, params, self.now)
        after = self.job(call.call_id)
        open_statuses = (JobStatus.DIALING, JobStatus.PLACED, JobStatus.UNKNOWN)
        belongs = before["attempts"] == call.attempt and before["status"] in open_statuses
        if not belongs:
            assert after == before, f"callback of attempt {call.attempt} changed attempt {before['attempts']}"
            return
        if before.get("outcome") and before.get("call_uuid") == call.call_uuid:
            assert after == before
            return
        assert after["outcome"] == call.status and after["call_uuid"] == call.call_uuid, (before, after)
        assert after["request_uuids"][str(call.attempt)] == call.request_uuid
        assert after["attempts"] == call.attempt
        if before["status"] == JobStatus.UNKNOWN:
            self.settled_unknown.add((call.call_id, call.attempt))
        self.now += 1

    @precondition(lambda self: self.plivo.slow)
    @rule(data=st.data())
    def slow_reply(self, data: st.DataObject) -> None:
        """A dial's 201 written only now, as a slow worker would: it may land after a later attempt."""
        self.dirty = True
        reply = data.draw(st.sampled_from(self.plivo.slow))
        self.plivo.slow.remove(reply)
        before = self.job(reply.call_id)
        self.repo.mark_placed(
            reply.call_id,
            self.now,
            reply.request_uuid,
            "api-slow",
            attempt=reply.attempt,
            request_uuids=reply.request_uuids,
        )
        after = self.job(reply.call_id)
        if before["attempts"] != reply.attempt:
            assert after == before, "a slow reply changed a later attempt"

    @rule(index=st.integers(0, 1))
    def cancel(self, index: int) -> None:
        self.dirty = True
        call_id = self.ids[index % len(self.ids)]
        try:
            self.repo.cancel(call_id)
        except JobError:
            pass

    # --- invariants -----------------------------------------------------------------------------------

    def job(self, call_id: str) -> dict[str, Any]:
        job = self.repo.get(call_id)
        assert job is not None
        return dict(job)

    @invariant()
    def lifecycle_holds(self) -> None:
        if not self.dirty:  # a tick changes no job
            return
        self.dirty = False
        seen = [(c.call_id, c.attempt) for c in self.plivo.calls]
        assert len(seen) == len(set(seen)), f"a job dialled twice for one attempt: {seen}"
        # requests that may have reached Plivo (a crash before it, or a 429/5xx, gave the attempt back)
        maybe = [
            (cid, a) for cid, a, mode in self.plivo.requests if mode in REAL_CALL or mode == "timeout-none"
        ]
        assert len(maybe) == len(set(maybe)), f"a second request for one attempt: {self.plivo.requests}"
        for call_id, attempt, _ in self.plivo.requests:
            assert 1 <= attempt <= self.max_attempts[call_id], "dialled past max_attempts"
            was = self.unknown_at.get(call_id)
            if was is not None and attempt > was:
                assert (call_id, was) in self.settled_unknown, f"{call_id} re-dialled after unknown"
        for call_id in self.ids:
            job = self.job(call_id)
            assert 0 <= job["attempts"] <= self.max_attempts[call_id], job
            if job["status"] == JobStatus.UNKNOWN:
                self.unknown_at[call_id] = job["attempts"]

    def teardown(self) -> None:
        for call_id in self.ids:
            self.table.delete_item(Key={"call_id": call_id})


@pytest.mark.slow
def test_job_lifecycle_model(table) -> None:
    Lifecycle.table = table
    quiet = logs.log.log_level if hasattr(logs.log, "log_level") else None
    logs.set_level("CRITICAL")  # a pass logs a dozen lines; formatting them would be most of the time
    try:
        Lifecycle.TestCase.settings = settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            # A failing sequence is worth a shrink, but each step is several moto requests: keep CI bounded.
            phases=[Phase.explicit, Phase.generate] + ([Phase.shrink] if SHRINK else []),
        )
        Lifecycle.TestCase().runTest()
    finally:
        logs.set_level(logging.getLevelName(quiet) if isinstance(quiet, int) else "INFO")

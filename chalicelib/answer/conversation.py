"""One /answer request as a step of a conversation: its job (read only for a template that names `job`),
the names conversation templates get, and what a served step records on its job.

The imperative shell around the pure rules of `steps`: DynamoDB through a StepJournal, the do-not-call list
through the campaign store, both reached lazily, so a v1 answer (no step, no job, no result) makes no
request and pays for no client. Nothing here raises into the reply: a failed write is an ERROR line, and
the caller still hears the step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from chalicelib import logs, metrics
from chalicelib.answer import steps
from chalicelib.answer.steps import StepEffects
from chalicelib.logs import log

if TYPE_CHECKING:
    from chalicelib.answer.journal import StepJournal
    from chalicelib.answer.pipeline import Answer
    from chalicelib.calls.campaign_store import CampaignStore

_UNREAD = object()


class Conversation:
    """The conversation state of one answer request (`params` as Plivo sent them, query included)."""

    def __init__(
        self,
        params: Mapping[str, str],
        *,
        base_url: Callable[[], str | None],
        journal: Callable[[], StepJournal],
        dnc: Callable[[], CampaignStore] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.params = params
        self.step = params.get("step") or None
        self.call_id = params.get("call_id") or None
        self._base_url = base_url
        self._base: str | None | object = _UNREAD
        self._journal = journal
        self._dnc = dnc
        self._clock = clock
        self._job: dict[str, Any] | None | object = _UNREAD

    # ---------------------------------------------------------------- rendering

    def names(self, uses: frozenset[str], template: str, effects: StepEffects) -> Mapping[str, Any]:
        """The context entries for a template that names some of render.STEP_NAMES (pipeline.StepNames)."""
        return steps.context_names(uses, template, self.call_id, self.base_url, self.job, effects)

    def base_url(self) -> str | None:
        """The /answer URL this request was signed for (PUBLIC_BASE_URL's, or API Gateway's)."""
        if self._base is _UNREAD:
            self._base = self._base_url()
        return self._base  # type: ignore[return-value]

    def job(self) -> dict[str, Any] | None:
        """The job whose call_id the request carries: one GetItem per request at most, None when there is
        none (or it cannot be read: logged, and the template renders it empty)."""
        if self._job is _UNREAD:
            self._job = None
            if self.call_id:
                try:
                    self._job = self._journal().load(self.call_id)
                except Exception as exc:  # noqa: BLE001 - the caller still hears the step
                    log.error(
                        "cannot read the job for the answer",
                        call_id=self.call_id,
                        call_uuid=self.params.get("CallUUID"),
                        cause=logs.cause(exc),
                    )
        return self._job  # type: ignore[return-value]

    # ---------------------------------------------------------------- after the reply is chosen

    def finish(self, answer: Answer) -> None:
        """Apply what the reply means for the job: record the step's input, the served reply's result, and
        an opt-out. Never raises: the reply is served whatever happens here."""
        try:
            self._finish(answer)
        except Exception as exc:  # noqa: BLE001 - a bug here must not cost the caller the step
            log.error(
                "step not recorded on the job",
                call_id=self.call_id,
                call_uuid=self.params.get("CallUUID"),
                step=self.step,
                cause=logs.cause(exc),
            )

    def _finish(self, answer: Answer) -> None:
        effects = None if answer.fell_back else answer.effects
        if effects is not None and effects.opt_out:
            self._opt_out()
        if not self.call_id:
            return
        record = steps.record_for(self.step, answer.served, self.params, effects, self._clock())
        if record is None:
            return
        known = self._job is not _UNREAD
        if known and self._job is None:
            return  # the job was read and does not exist: nothing to record, nothing to create
        has_responses = ("responses" in self._job) if isinstance(self._job, dict) else None
        try:
            written = self._journal().record(self.call_id, record, has_responses)
        except Exception as exc:  # noqa: BLE001 - logged; the caller still hears the step
            log.error(
                "step not recorded on the job",
                call_id=self.call_id,
                call_uuid=self.params.get("CallUUID"),
                step=record.step,
                cause=logs.cause(exc),
            )
            return
        if written and record.response is not None:
            metrics.count(metrics.STEP_INPUTS)
        if written and record.result is not None:
            metrics.count(metrics.RESULTS, Campaign=str(written.get("campaign") or "none"))
            self._publish_result(written)
        if not written:
            log.info(
                "step already recorded, or no such job",
                call_id=self.call_id,
                call_uuid=self.params.get("CallUUID"),
                step=record.step,
            )

    def _publish_result(self, job: dict[str, Any]) -> None:
        """`Call Result`, once the result is stored; kept in the job's outbox if EventBridge refuses it."""
        from chalicelib import resources
        from chalicelib.calls import events

        event = events.for_job(job, events.RESULT)
        try:
            refused = resources.event_publisher().publish([event])
            if refused:
                resources.job_repository().defer_event(str(job["call_id"]), event)
        except Exception as exc:  # noqa: BLE001 - the result is stored; only its event is late
            log.error("result event neither sent nor kept", call_id=job.get("call_id"), cause=logs.cause(exc))

    def caller_number(self) -> str | None:
        """Who opted out: the job's `to` on an outbound call (else Plivo's `To`), the `From` of an inbound
        one; None for a SIP URI or nothing at all."""
        if (self.params.get("Direction") or "").lower() == "outbound":
            job = self.job() if self.call_id else None
            number = (job or {}).get("to") or self.params.get("To")
        else:
            number = self.params.get("From")
        if not isinstance(number, str) or not number or number.lower().startswith("sip:"):
            return None
        return number

    def _opt_out(self) -> None:
        call_id, call_uuid = self.call_id, self.params.get("CallUUID")
        raw = self.caller_number()
        if raw is None:
            log.warning("optout(): no number for the do-not-call list", call_id=call_id, call_uuid=call_uuid)
            return
        from chalicelib.calls.numbers import NumberError, normalize

        try:
            number = normalize(raw)
        except NumberError as exc:
            log.warning(
                "optout(): the caller's number cannot go on the do-not-call list",
                call_id=call_id,
                call_uuid=call_uuid,
                cause=str(exc),
            )
            return
        if self._dnc is None:
            return
        try:
            self._dnc().dnc_add(number, f"opted out during call {call_id or call_uuid}")
        except Exception as exc:  # noqa: BLE001 - logged at ERROR: callflow's own storage failed
            log.error(
                "optout(): cannot add the caller to the do-not-call list",
                call_id=call_id,
                call_uuid=call_uuid,
                cause=logs.cause(exc),
            )
            return
        log.info("caller opted out; added to the do-not-call list", call_id=call_id, call_uuid=call_uuid)

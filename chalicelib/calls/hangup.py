"""The hangup callback's effect on a job: record how the call ended, and queue another attempt when the
callee was busy or did not answer. Plivo may repeat a callback, so applying one twice changes nothing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from chalicelib.calls import schedule
from chalicelib.calls.call_body import whole_number
from chalicelib.logs import log
from chalicelib.settings import Settings

if TYPE_CHECKING:
    from chalicelib.calls.jobs import JobRepository


RETRYABLE = ("busy", "no-answer", "timeout")
# Statuses in which the job is waiting for a call's outcome. `dialing`: the callback beat the launcher's
# own write; `unknown`: the launcher could not tell whether the call was placed, and now it knows.
OPEN_STATUSES = ("dialing", "placed", "unknown")
MAX_TRIES = 5


def record_hangup(
    repo: JobRepository, settings: Settings, call_id: str, params: Mapping[str, str], now: float
) -> None:
    """Apply Plivo's hangup parameters to job `call_id`. Never raises for an unknown or settled job."""
    call_status = (params.get("CallStatus") or "").strip().lower()
    call_uuid = params.get("CallUUID") or ""
    fields = {"call_id": call_id, "call_uuid": call_uuid, "call_status": call_status}
    for _ in range(MAX_TRIES):
        job = repo.get(call_id) if call_id else None
        if job is None:
            log.warning("hangup for an unknown job ignored", **fields)
            return
        reason = _ignore_reason(job, params)
        if reason:
            log.info(f"hangup ignored: {reason}", status=job.get("status"), **fields)
            return
        changes, remove = transition(job, settings, params, now)
        if repo.record_outcome(call_id, job["status"], int(job.get("attempts") or 0), changes, remove):
            log.info(
                "hangup recorded",
                status=changes["status"],
                hangup_cause=params.get("HangupCause"),
                attempts=job.get("attempts"),
                **fields,
            )
            return
        # The job changed under us (a duplicate callback, or the launcher's own write): look again.
    log.error("hangup not recorded: job kept changing", **fields)


def _ignore_reason(job: Mapping[str, Any], params: Mapping[str, str]) -> str | None:
    status = job.get("status")
    if status not in OPEN_STATUSES:
        return f"job is already {status}"
    call_uuid = params.get("CallUUID")
    if call_uuid and job.get("outcome") and job.get("call_uuid") == call_uuid:
        return "this call's outcome is already recorded"
    request_uuid, current = params.get("RequestUUID"), job.get("request_uuid")
    if request_uuid and current:
        # placed: the job holds this attempt's request_uuid. dialing/unknown: it still holds the previous
        # attempt's, whose outcome was recorded before this attempt was claimed.
        if (status == "placed") == (request_uuid != current):
            return "callback is for an earlier attempt"
    return None


def transition(
    job: Mapping[str, Any], settings: Settings, params: Mapping[str, str], now: float
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The job's new fields for this hangup: retry later, completed, or failed. Pure, except for a
    WARNING when the stored max_attempts is malformed."""
    call_status = (params.get("CallStatus") or "").strip().lower()
    attempts = int(job.get("attempts") or 0)
    max_attempts = _max_attempts(job, settings)
    changes: dict[str, Any] = {
        "outcome": call_status or "missing",
        "hangup_cause": params.get("HangupCause") or "",
        "duration": _int(params.get("Duration")),
        "call_uuid": params.get("CallUUID") or "",
        "updated_at": now,
    }
    remove: tuple[str, ...] = ()
    if call_status == "completed":
        changes["status"] = "completed"
        remove = ("last_error",)
    elif call_status in RETRYABLE and attempts < max_attempts:
        due = now + schedule.retry_delay(settings.retry_delays, attempts)
        window = job.get("window") or settings.call_window
        tz = job.get("tz") or settings.default_tz
        try:
            due = schedule.next_opening(window, tz, due)
        except schedule.WindowError:
            pass  # the launcher fails the job with the reason when it comes due
        changes.update(
            status="pending", due_at=due, last_error=f"attempt {attempts} of {max_attempts}: {call_status}"
        )
    else:
        changes["status"] = "failed"
        if call_status in RETRYABLE:
            changes["last_error"] = f"{call_status} after {attempts} of {max_attempts} attempts"
        else:
            cause = params.get("HangupCause") or "no hangup cause"
            changes["last_error"] = f"call ended {call_status or 'without CallStatus'}: {cause}"
    return changes, remove


def _max_attempts(job: Mapping[str, Any], settings: Settings) -> int:
    """The job's own max_attempts, or the setting when it has none or one stored before jobs were
    validated: a bad stored value must not turn every hangup callback into an error."""
    value = job.get("max_attempts")
    if value in (None, ""):
        return settings.max_attempts
    number = whole_number(value)
    if number is None or number < 1:
        log.warning(
            "job max_attempts is malformed; using MAX_ATTEMPTS",
            call_id=job.get("call_id"),
            max_attempts=repr(value),
            fallback=settings.max_attempts,
        )
        return settings.max_attempts
    return number


def _int(value: Any) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return 0

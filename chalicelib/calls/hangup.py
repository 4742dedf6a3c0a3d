"""The hangup callback's effect on a job: record how the call ended, and queue another attempt when the
callee was busy or did not answer. Plivo may repeat a callback, so applying one twice changes nothing."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from chalicelib.calls import schedule
from chalicelib.calls.call_body import whole_number
from chalicelib.calls.jobs import JobStatus
from chalicelib.logs import log
from chalicelib.settings import Settings

if TYPE_CHECKING:
    from chalicelib.calls.jobs import JobRepository


class CallStatus(StrEnum):
    """Plivo's final CallStatus values on a hangup callback (PLIVO.md)."""

    COMPLETED = "completed"
    BUSY = "busy"
    FAILED = "failed"
    TIMEOUT = "timeout"
    NO_ANSWER = "no-answer"
    CANCEL = "cancel"


HANGUP_EVENT = "hangup"
FINAL: frozenset[str] = frozenset(CallStatus)
RETRYABLE: frozenset[str] = frozenset((CallStatus.BUSY, CallStatus.NO_ANSWER, CallStatus.TIMEOUT))
# Statuses in which the job is waiting for a call's outcome. `dialing`: the callback beat the launcher's
# own write; `unknown`: the launcher could not tell whether the call was placed, and now it knows.
OPEN_STATUSES: frozenset[str] = frozenset((JobStatus.DIALING, JobStatus.PLACED, JobStatus.UNKNOWN))
MAX_TRIES = 5


def record_hangup(
    repo: JobRepository, settings: Settings, call_id: str, params: Mapping[str, str], now: float
) -> None:
    """Apply Plivo's hangup parameters to job `call_id`. Never raises for an unknown or settled job."""
    call_status = (params.get("CallStatus") or "").strip().lower()
    call_uuid = params.get("CallUUID") or ""
    fields: dict[str, Any] = {"call_id": call_id, "call_uuid": call_uuid, "call_status": call_status}
    event = (params.get("Event") or "").strip()
    if event.lower() != HANGUP_EVENT or call_status not in FINAL:
        # Plivo's answer, ring or machine-detection request sent here by a hostile answer_url, or a
        # hangup that is not final: nothing ended, so nothing is recorded.
        log.info("callback ignored: not a final hangup", event=event[:40], **fields)
        return
    for _ in range(MAX_TRIES):
        job = repo.get(call_id) if call_id else None
        if job is None:
            log.warning("hangup for an unknown job ignored", **fields)
            return
        reason = ignore_reason(job, params)
        if reason:
            log.info(f"hangup ignored: {reason}", status=job.get("status"), **fields)
            return
        changes, remove = transition(job, settings, params, now)
        if repo.record_outcome(call_id, job["status"], _attempts(job), changes, remove):
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


def _attempts(job: Mapping[str, Any]) -> int:
    return whole_number(job.get("attempts")) or 0


def _uuid_map(job: Mapping[str, Any], field: str) -> dict[int, str]:
    """A job's attempt → id map (`request_uuids`, `call_uuids`), ignoring anything malformed."""
    raw = job.get(field)
    if not isinstance(raw, Mapping):
        return {}
    found: dict[int, str] = {}
    for key, value in raw.items():
        number = whole_number(key)
        if number is not None and isinstance(value, str) and value:
            found[number] = value
    return found


def ignore_reason(job: Mapping[str, Any], params: Mapping[str, str]) -> str | None:
    """Why this callback must not change the job, or None when it belongs to the job's current attempt.

    Every attempt's RequestUUID (and CallUUID, once a callback brought it) is kept on the job. A callback
    belongs to the current attempt when its RequestUUID is the current attempt's; while that is not known
    yet (`dialing`, or `unknown` after a timeout) when it is none of the earlier attempts'. A replay or a
    late repeat of an earlier attempt therefore never moves a later one."""
    status = job.get("status")
    if status not in OPEN_STATUSES:
        return f"job is already {status}"
    call_uuid = (params.get("CallUUID") or "").strip()
    if call_uuid and job.get("outcome") and job.get("call_uuid") == call_uuid:
        return "this call's outcome is already recorded"
    attempt = _attempts(job)
    requests = _uuid_map(job, "request_uuids")
    calls = _uuid_map(job, "call_uuids")
    earlier = {uuid for number, uuid in requests.items() if number < attempt}
    current = requests.get(attempt)
    legacy = job.get("request_uuid")
    if "request_uuids" not in job and isinstance(legacy, str) and legacy:
        # Stored before every attempt's ids were kept: `request_uuid` is the last recorded attempt's.
        if status == JobStatus.PLACED:
            current = legacy
        else:
            earlier.add(legacy)
    if call_uuid and call_uuid in {uuid for number, uuid in calls.items() if number < attempt}:
        return "callback is for an earlier attempt"
    request_uuid = (params.get("RequestUUID") or "").strip()
    if not request_uuid:
        if current or earlier:
            return "callback has no RequestUUID to match it with an attempt"
        return None
    if current:
        return None if request_uuid == current else "callback is for an earlier attempt"
    if request_uuid in earlier:
        return "callback is for an earlier attempt"
    return None


def transition(
    job: Mapping[str, Any], settings: Settings, params: Mapping[str, str], now: float
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The job's new fields for this hangup: retry later, completed, or failed. Pure, except for a
    WARNING when the stored max_attempts is malformed."""
    call_status = (params.get("CallStatus") or "").strip().lower()
    attempts = _attempts(job)
    max_attempts = _max_attempts(job, settings)
    call_uuid = (params.get("CallUUID") or "").strip()
    request_uuid = (params.get("RequestUUID") or "").strip()
    changes: dict[str, Any] = {
        "outcome": call_status or "missing",
        "hangup_cause": params.get("HangupCause") or "",
        "duration": _int(params.get("Duration")),
        "call_uuid": call_uuid,
        "updated_at": now,
    }
    # This attempt's ids, kept so that its callbacks can never be taken for a later attempt's.
    if request_uuid:
        changes["request_uuids"] = _ids_with(job, "request_uuids", attempts, request_uuid)
    if call_uuid:
        changes["call_uuids"] = _ids_with(job, "call_uuids", attempts, call_uuid)
    remove: tuple[str, ...] = ()
    if call_status == CallStatus.COMPLETED:
        changes["status"] = JobStatus.COMPLETED
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
            status=JobStatus.PENDING,
            due_at=due,
            last_error=f"attempt {attempts} of {max_attempts}: {call_status}",
        )
    else:
        changes["status"] = JobStatus.FAILED
        if call_status in RETRYABLE:
            changes["last_error"] = f"{call_status} after {attempts} of {max_attempts} attempts"
        else:
            cause = params.get("HangupCause") or "no hangup cause"
            changes["last_error"] = f"call ended {call_status or 'without CallStatus'}: {cause}"
    return changes, remove


def _ids_with(job: Mapping[str, Any], field: str, attempt: int, uuid: str) -> dict[str, str]:
    ids = {str(number): value for number, value in _uuid_map(job, field).items()}
    ids[str(attempt)] = uuid
    return ids


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

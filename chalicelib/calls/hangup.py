"""The hangup callback's effect on a job: record how the call ended, and queue another attempt when the
outcome's retry rules allow one. Plivo may repeat a callback, so applying one twice changes nothing.

`transition` is the pure rule (SPEC "Hangup callback", "Machine detection and outcomes"); `record_hangup`
is the shell around it: read the job and its campaign, write conditionally, then publish the event of the
stored state and count the outcome."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from chalicelib import logs, metrics
from chalicelib.calls import schedule
from chalicelib.calls.call_body import voicemail_template, whole_number
from chalicelib.calls.jobs import JobStatus
from chalicelib.logs import log
from chalicelib.settings import Settings

if TYPE_CHECKING:
    from chalicelib.calls.campaigns import Campaign
    from chalicelib.calls.events import Publisher
    from chalicelib.calls.jobs import JobRepository

CampaignLookup = Callable[[str], "Campaign | None"]


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
MACHINE = "machine"  # the outcome of a call answered by a machine (SPEC "Machine detection and outcomes")
# What /machine wrote for one attempt; a retry removes them, so the next attempt starts clean.
MACHINE_FIELDS = ("machine", "machine_attempt", "voicemail")
# Plivo's hangup parameter -> the job's field, stored as text (empty when Plivo did not send it).
TEXT_FIELDS = (
    ("HangupCauseName", "hangup_cause_name"),
    ("HangupSource", "hangup_source"),
    ("AnswerTime", "answer_time"),
    ("EndTime", "end_time"),
)
STIR_PARAMS = ("STIRVerification", "StirVerification", "StirVerificationStatus")


def record_hangup(
    repo: JobRepository,
    settings: Settings,
    call_id: str,
    params: Mapping[str, str],
    now: float,
    *,
    campaigns: CampaignLookup | None = None,
    publisher: Publisher | None = None,
) -> str | None:
    """Apply Plivo's hangup parameters to job `call_id`; the job's new status when this callback changed
    it, else None. Never raises for an unknown or settled job.

    `campaigns` finds the job's campaign (its retry rules); `publisher` sends the new state's event once it
    is stored (what EventBridge refuses waits in the job's outbox). Only the callback that changed the job
    publishes, so Plivo's repeats produce no second event."""
    call_status = (params.get("CallStatus") or "").strip().lower()
    call_uuid = params.get("CallUUID") or ""
    fields: dict[str, Any] = {"call_id": call_id, "call_uuid": call_uuid, "call_status": call_status}
    event = (params.get("Event") or "").strip()
    if event.lower() != HANGUP_EVENT or call_status not in FINAL:
        # Plivo's answer, ring or machine-detection request sent here by a hostile answer_url, or a
        # hangup that is not final: nothing ended, so nothing is recorded.
        log.info("callback ignored: not a final hangup", event=event[:40], **fields)
        return None
    campaign: Campaign | None = None
    looked_up = False
    for _ in range(MAX_TRIES):
        job = repo.get(call_id) if call_id else None
        if job is None:
            log.warning("hangup for an unknown job ignored", **fields)
            return None
        reason = ignore_reason(job, params)
        if reason:
            log.info(f"hangup ignored: {reason}", status=job.get("status"), **fields)
            return None
        name = job.get("campaign")
        if campaigns is not None and not looked_up and isinstance(name, str) and name:
            campaign, looked_up = campaigns(name), True
        changes, remove = transition(job, settings, params, now, campaign)
        # The outcome depends on what /machine wrote: a machine callback landing between the read and
        # this write fails the condition, and the next try sees it.
        as_read = {field: job.get(field) for field in MACHINE_FIELDS}
        if repo.record_outcome(call_id, job["status"], _attempts(job), changes, remove, unchanged=as_read):
            log.info(
                "hangup recorded",
                status=changes["status"],
                outcome=changes["outcome"],
                hangup_cause=params.get("HangupCause"),
                attempts=job.get("attempts"),
                **fields,
            )
            metrics.count(metrics.HANGUP_OUTCOMES, Outcome=str(changes["outcome"]))
            after = {k: v for k, v in {**job, **changes}.items() if k not in remove}
            publish(repo, publisher, after)
            return str(changes["status"])
        # The job changed under us (a duplicate callback, or the launcher's own write): look again.
    log.error("hangup not recorded: job kept changing", **fields)
    return None


def publish(repo: JobRepository, publisher: Publisher | None, job_after: Mapping[str, Any]) -> None:
    """Send the event of the job's stored state; what EventBridge refuses waits in the job's outbox for the
    launcher. Never raises: the state is stored, and the callback has done its part."""
    from chalicelib.calls import events

    event = events.for_status(job_after)
    if event is None or publisher is None:
        return
    call_id = str(job_after.get("call_id"))
    try:
        refused = publisher.publish([event])
    except Exception as exc:  # noqa: BLE001 - Publisher catches its own; belt and braces
        log.warning("event not published; kept in the outbox", call_id=call_id, cause=logs.cause(exc))
        refused = [event]
    if not refused:
        return
    metrics.count(metrics.EVENTS_DEFERRED)
    try:
        repo.defer_event(call_id, event)
    except Exception as exc:  # noqa: BLE001 - logged at ERROR: this event is lost unless re-derived
        log.error("event neither published nor kept", call_id=call_id, cause=logs.cause(exc))


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
    job: Mapping[str, Any],
    settings: Settings,
    params: Mapping[str, str],
    now: float,
    campaign: Campaign | None = None,
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The job's new fields for this hangup: retry later, completed, or failed. Pure, except for a
    WARNING when the stored max_attempts is malformed.

    The outcome is Plivo's CallStatus, or `machine` when /machine said this attempt reached one. Retries
    (SPEC "Machine detection and outcomes"): busy, no-answer and timeout while attempts remain; a machine
    only when no voicemail was left (a left one completes the job); cancel (declined) and failed never.
    `campaign` may set its own delays per outcome (an empty list: never retry) and max_attempts."""
    call_status = (params.get("CallStatus") or "").strip().lower()
    attempts = _attempts(job)
    max_attempts = _max_attempts(job, settings, campaign)
    call_uuid = (params.get("CallUUID") or "").strip()
    request_uuid = (params.get("RequestUUID") or "").strip()
    machine = machine_answered(job)
    outcome = MACHINE if machine else call_status or "missing"
    changes: dict[str, Any] = {
        "outcome": outcome,
        "hangup_cause": params.get("HangupCause") or "",
        "duration": _int(params.get("Duration")),
        "call_uuid": call_uuid,
        "updated_at": now,
    }
    changes.update(hangup_record(params))
    # This attempt's ids, kept so that its callbacks can never be taken for a later attempt's.
    if request_uuid:
        changes["request_uuids"] = _ids_with(job, "request_uuids", attempts, request_uuid)
    if call_uuid:
        changes["call_uuids"] = _ids_with(job, "call_uuids", attempts, call_uuid)
    remove: tuple[str, ...] = ()
    delays = retry_delays(outcome, settings, campaign)
    if (machine and voicemail_left(job, campaign)) or (not machine and call_status == CallStatus.COMPLETED):
        changes["status"] = JobStatus.COMPLETED
        remove = ("last_error",)
    elif delays and attempts < max_attempts:
        changes.update(
            status=JobStatus.PENDING,
            due_at=retry_due(job, settings, campaign, now + schedule.retry_delay(delays, attempts)),
            last_error=f"attempt {attempts} of {max_attempts}: {outcome}",
        )
        remove = tuple(name for name in MACHINE_FIELDS if name in job)
    else:
        changes["status"] = JobStatus.FAILED
        if delays == () and campaign is not None:
            changes["last_error"] = f"{outcome}: campaign {campaign.name} does not retry it"
        elif delays is not None:
            changes["last_error"] = f"{outcome} after {attempts} of {max_attempts} attempts"
        else:
            cause = params.get("HangupCause") or "no hangup cause"
            changes["last_error"] = f"call ended {call_status or 'without CallStatus'}: {cause}"
    return changes, remove


def hangup_record(params: Mapping[str, str]) -> dict[str, Any]:
    """What Plivo tells about how the call ended (v2's written fields); the texts are empty and the code
    None when Plivo did not send them, so an earlier attempt's values never linger."""
    record: dict[str, Any] = {field: str(params.get(name) or "").strip()[:200] for name, field in TEXT_FIELDS}
    code = whole_number(str(params.get("HangupCauseCode") or "").strip())
    record["hangup_cause_code"] = code
    record["bill_duration"] = _int(params.get("BillDuration"))
    stir = next((params[name] for name in STIR_PARAMS if params.get(name)), None)
    if stir:
        record["stir_verification"] = str(stir).strip()[:100]
    return record


def machine_answered(job: Mapping[str, Any]) -> bool:
    """Did /machine say the job's current attempt reached a machine?"""
    if job.get("machine") is not True:
        return False
    marked = whole_number(job.get("machine_attempt"))
    return marked is None or marked == _attempts(job)


def voicemail_left(job: Mapping[str, Any], campaign: Campaign | None = None) -> bool:
    """A voicemail was left: the call was transferred to the voicemail step, or that step was served."""
    if job.get("voicemail") is True:
        return True
    template = voicemail_template(detection_of(job, campaign))
    return template is not None and job.get("last_step") == template


def detection_of(job: Mapping[str, Any], campaign: Campaign | None) -> object:
    """The job's machine_detection, else its campaign's (as the launcher dialled it)."""
    value = job.get("machine_detection")
    if value in (None, "", False) and campaign is not None:
        return campaign.machine_detection
    return value


def retry_delays(outcome: str, settings: Settings, campaign: Campaign | None) -> tuple[int, ...] | None:
    """Seconds before each further attempt for this outcome; () when the campaign says never, None when
    the outcome is not one that is retried (completed, cancel, failed)."""
    if outcome not in RETRYABLE and outcome != MACHINE:
        return None
    if campaign is not None and outcome in campaign.retry:
        return tuple(campaign.retry[outcome])
    return tuple(settings.retry_delays)


def retry_due(job: Mapping[str, Any], settings: Settings, campaign: Campaign | None, due: float) -> float:
    """`due` moved into the callee's calling window: the job's window (else the campaign's, else
    CALL_WINDOW) in the job's tz, else the campaign's, else every zone of the number, else DEFAULT_TZ;
    on the campaign's days and outside its blackout dates. A window that cannot be read keeps `due` (the
    launcher fails the job with the reason when it comes due)."""
    from chalicelib.calls import campaigns, numbers

    window = job.get("window") or (campaign.window if campaign else None) or settings.call_window
    tz = job.get("tz") or (campaign.tz if campaign else None)
    if tz:
        zones = [str(tz)]
    else:
        to = str(job.get("to") or "").lstrip("+")
        zones = list(numbers.zones_for(to)) if to.isdigit() else []
        zones = zones or [settings.default_tz]
    try:
        for zone in zones:
            schedule.zone(zone)
        if campaign is None:
            moment = campaigns.next_allowed(due, str(window), zones)
        else:
            moment = campaigns.next_allowed(
                due, str(window), zones, campaign.days, campaign.blackout, campaign.tz
            )
    except schedule.WindowError:
        return due
    return due if moment is None else moment


def _ids_with(job: Mapping[str, Any], field: str, attempt: int, uuid: str) -> dict[str, str]:
    ids = {str(number): value for number, value in _uuid_map(job, field).items()}
    ids[str(attempt)] = uuid
    return ids


def _max_attempts(job: Mapping[str, Any], settings: Settings, campaign: Campaign | None = None) -> int:
    """The job's own max_attempts, else its campaign's, else the setting (also for a value stored before
    jobs were validated: a bad stored value must not turn every hangup callback into an error)."""
    value = job.get("max_attempts")
    if value in (None, ""):
        if campaign is not None and campaign.max_attempts is not None:
            return campaign.max_attempts
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

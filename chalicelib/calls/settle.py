"""No call stays `placed` for ever (SPEC "Operations"): a placed job whose hangup never came is settled from
Plivo's call records once the call must have ended (its claim + ring_timeout + time_limit + a margin).

PLIVO.md "Call records": a request Plivo still holds queued is left alone; a known call_uuid gives the
call's record; else the completed records to the job's number in the attempt's time window are listed, and
exactly one match settles the job. The record becomes the hangup callback Plivo would have sent, and goes
through the same rules (`hangup.record_hangup`: retries, events, metrics). No record, or several: the job
becomes `unknown` with the reason, and is never re-dialled automatically.

The rules are pure (`stuck_attempt`, `search_filters`, `pick_record`, `hangup_params`); `settle_stuck` is
the small adapter the launcher run calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from chalicelib import logs, metrics
from chalicelib.calls.call_body import whole_number
from chalicelib.calls.hangup import CampaignLookup, publish, record_hangup
from chalicelib.calls.jobs import JobStatus
from chalicelib.calls.plivo_api import MissingId, checked_id
from chalicelib.logs import log

if TYPE_CHECKING:
    from chalicelib.calls.events import Publisher
    from chalicelib.calls.jobs import JobRepository
    from chalicelib.calls.plivo_api import PlivoClient
    from chalicelib.settings import Settings

DEFAULT_TIME_LIMIT = 14_400  # Plivo's default time_limit (s)
DEFAULT_RING_TIMEOUT = 120  # Plivo's default ring_timeout (s)
MARGIN = 300  # seconds past the latest possible end before a missing hangup counts as lost
SKEW = 60  # seconds of clock difference allowed between callflow and Plivo in the record search
MAX_SEARCH_SECONDS = 29 * 86_400  # Plivo refuses end_time ranges over 30 days
MAX_SETTLED = 20  # Plivo lookups per run: each job costs up to 3 of the account's 300 requests per 5 s
MAX_EXAMINED = 500  # placed jobs read per run, oldest claim first
# A record's call_state -> the CallStatus its hangup callback would have carried.
STATE_STATUS = {
    "ANSWER": "completed",
    "ANSWERED": "completed",
    "COMPLETED": "completed",
    "BUSY": "busy",
    "NO_ANSWER": "no-answer",
    "NOANSWER": "no-answer",
    "TIMEOUT": "timeout",
    "CANCEL": "cancel",
    "CANCELLED": "cancel",
    "CANCELED": "cancel",
    "FAILED": "failed",
}


@dataclass(frozen=True)
class Attempt:
    """What the sweep knows of a placed job's current attempt."""

    call_id: str
    number: int
    request_uuid: str | None
    call_uuid: str | None
    to: str
    from_: str | None
    started: float  # when it was claimed
    deadline: float  # when its hangup is overdue
    earlier_calls: frozenset[str]  # call_uuids of earlier attempts: never this attempt's record


def _ids(job: Mapping[str, Any], field: str) -> dict[int, str]:
    raw = job.get(field)
    found: dict[int, str] = {}
    if isinstance(raw, Mapping):
        for key, value in raw.items():
            number = whole_number(key)
            if number is not None and isinstance(value, str) and value:
                found[number] = value
    return found


def _seconds(value: object, default: int) -> int:
    number = whole_number(value)
    return number if number is not None and number > 0 else default


def stuck_attempt(job: Mapping[str, Any], now: float, margin: float = MARGIN) -> Attempt | None:
    """The job's current attempt when it is `placed` and its hangup is overdue, else None. Pure."""
    if job.get("status") != JobStatus.PLACED:
        return None
    moments = [job.get("claimed_at"), job.get("updated_at"), job.get("due_at")]
    known = [float(v) for v in moments if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0]
    if not known:
        return None
    started = known[0]
    ring = _seconds(job.get("ring_timeout"), DEFAULT_RING_TIMEOUT)
    limit = _seconds(job.get("time_limit"), DEFAULT_TIME_LIMIT)
    deadline = started + ring + limit + margin
    if now < deadline:
        return None
    number = whole_number(job.get("attempts")) or 0
    requests, calls = _ids(job, "request_uuids"), _ids(job, "call_uuids")
    request_uuid = requests.get(number)
    if request_uuid is None and "request_uuids" not in job and isinstance(job.get("request_uuid"), str):
        request_uuid = job.get("request_uuid") or None  # stored before every attempt's ids were kept
    from_ = job.get("from")
    return Attempt(
        call_id=str(job["call_id"]),
        number=number,
        request_uuid=request_uuid,
        call_uuid=calls.get(number),
        to=str(job.get("to") or "").lstrip("+"),
        from_=str(from_).lstrip("+") if isinstance(from_, str) and from_ else None,
        started=started,
        deadline=deadline,
        earlier_calls=frozenset(uuid for n, uuid in calls.items() if n != number),
    )


def _plivo_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def search_filters(attempt: Attempt, now: float) -> dict[str, str]:
    """The record search of an attempt without a known call_uuid: completed calls to its number that ended
    between its claim and now (at most 29 days, Plivo's limit is 30). Pure."""
    lower = attempt.started - SKEW
    upper = min(now, lower + MAX_SEARCH_SECONDS)
    filters = {
        "to_number": attempt.to,
        "end_time__gte": _plivo_time(lower),
        "end_time__lte": _plivo_time(upper),
        "limit": "20",
    }
    if attempt.from_:
        filters["from_number"] = attempt.from_
    return filters


def pick_record(objects: Sequence[Any], attempt: Attempt) -> dict[str, Any] | str:
    """The one record that is this attempt's call, or why there is none. Pure."""
    candidates = [
        record
        for record in objects
        if isinstance(record, Mapping)
        and record.get("call_uuid") not in attempt.earlier_calls
        and str(record.get("call_direction") or "outbound") == "outbound"
    ]
    window = f"between {_plivo_time(attempt.started - SKEW)} and the sweep (UTC)"
    if not candidates:
        return f"no hangup callback, and Plivo has no call record to {attempt.to} {window}"
    if len(candidates) > 1:
        return (
            f"no hangup callback, and Plivo has {len(candidates)} call records to {attempt.to} {window}: "
            "cannot tell which one was this call"
        )
    return dict(candidates[0])


def hangup_params(record: Mapping[str, Any], attempt: Attempt) -> dict[str, str] | str:
    """The hangup callback Plivo would have sent for this record, or why the record cannot say. Pure."""
    state = str(record.get("call_state") or "").strip().upper().replace(" ", "_")
    status = STATE_STATUS.get(state)
    call_uuid = record.get("call_uuid")
    if status is None:
        return (
            f"no hangup callback, and Plivo's record of call {call_uuid} has call_state {state or 'none'!r}"
        )
    params = {
        "Event": "Hangup",
        "CallStatus": status,
        "CallUUID": str(call_uuid or attempt.call_uuid or ""),
        "RequestUUID": attempt.request_uuid or "",
        "HangupCause": str(record.get("hangup_cause_name") or ""),
        "HangupCauseName": str(record.get("hangup_cause_name") or ""),
        "HangupCauseCode": str(record.get("hangup_cause_code") or ""),
        "HangupSource": str(record.get("hangup_source") or ""),
        "Duration": str(record.get("call_duration") or record.get("bill_duration") or 0),
        "BillDuration": str(record.get("bill_duration") or 0),
        "AnswerTime": str(record.get("answer_time") or ""),
        "EndTime": str(record.get("end_time") or ""),
    }
    if record.get("stir_verification"):
        params["STIRVerification"] = str(record["stir_verification"])
    return params


def find_record(plivo: PlivoClient, attempt: Attempt, now: float) -> dict[str, Any] | str | None:
    """Ask Plivo: the attempt's record, a reason it has none (-> unknown), or None to look again next run
    (still queued, or Plivo could not answer now)."""
    if attempt.request_uuid:
        try:
            queued = plivo.queued_call(attempt.request_uuid)
        except MissingId:
            queued = None
        if queued is not None:
            if queued.ok:
                return None  # Plivo still holds the request: its call has not even started
            if queued.status != 404:
                raise LookupFailed(queued.error or "no reply")
    if attempt.call_uuid:
        try:
            found = plivo.call_record(checked_id(attempt.call_uuid))
        except MissingId:
            found = None
        if found is not None:
            if found.ok:
                return dict(found.payload)
            if found.status == 404:
                return f"no hangup callback, and Plivo has no record of call {attempt.call_uuid}"
            raise LookupFailed(found.error or "no reply")
    if not attempt.to:
        return "no hangup callback, and the job has no number to look its call up by"
    listed = plivo.list_calls(search_filters(attempt, now))
    if not listed.ok:
        raise LookupFailed(listed.error or "no reply")
    objects = listed.payload.get("objects")
    return pick_record(objects if isinstance(objects, list) else [], attempt)


class LookupFailed(Exception):
    """Plivo did not answer a lookup now (5xx, 429, timeout, 401): the job waits for the next run."""


def settle_stuck(
    repo: JobRepository,
    plivo: PlivoClient,
    settings: Settings,
    now: float,
    *,
    margin: float = MARGIN,
    limit: int = MAX_SETTLED,
    examine: int = MAX_EXAMINED,
    campaigns: CampaignLookup | None = None,
    publisher: Publisher | None = None,
) -> dict[str, int]:
    """Settle placed jobs whose hangup is overdue; a summary `{"checked", "settled", "unknown", "waiting",
    "errors"}`. Reads the `status-due_at-index` for status=placed (oldest due first, due at least `margin`
    ago), examines at most `examine` jobs and asks Plivo about at most `limit`. Never raises for Plivo."""
    summary = dict.fromkeys(("checked", "settled", "unknown", "waiting", "errors"), 0)
    jobs = repo.query_status(JobStatus.PLACED, due_before=now - margin, page_size=min(examine, 100))
    for examined, job in enumerate(jobs):
        if examined >= examine or summary["checked"] >= limit:
            break
        attempt = stuck_attempt(job, now, margin)
        if attempt is None:
            continue
        summary["checked"] += 1
        fields: dict[str, Any] = {"call_id": attempt.call_id, "attempt": attempt.number}
        try:
            found = find_record(plivo, attempt, now)
        except LookupFailed as exc:
            summary["errors"] += 1
            log.warning("stuck placed job not settled: Plivo did not answer", cause=str(exc), **fields)
            continue
        if found is None:
            summary["waiting"] += 1
            log.info("placed job still queued at Plivo", **fields)
            continue
        if isinstance(found, dict):
            params = hangup_params(found, attempt)
            if isinstance(params, dict):
                status = record_hangup(
                    repo, settings, attempt.call_id, params, now, campaigns=campaigns, publisher=publisher
                )
                if status is not None:
                    summary["settled"] += 1
                    log.info("stuck placed job settled from Plivo's call record", status=status, **fields)
                continue
            found = params
        if _mark_unknown(repo, job, attempt, found, now, publisher):
            summary["unknown"] += 1
    if summary["unknown"]:
        metrics.count(metrics.CALLS_UNKNOWN, summary["unknown"])
    return summary


def _mark_unknown(
    repo: JobRepository,
    job: Mapping[str, Any],
    attempt: Attempt,
    reason: str,
    now: float,
    publisher: Publisher | None,
) -> bool:
    changes = {"status": JobStatus.UNKNOWN.value, "last_error": reason[:1000], "updated_at": now}
    try:
        stored = repo.record_outcome(attempt.call_id, JobStatus.PLACED, attempt.number, changes)
    except Exception as exc:  # noqa: BLE001 - the next run looks again
        log.error("stuck placed job not marked unknown", call_id=attempt.call_id, cause=logs.cause(exc))
        return False
    if stored:
        # ERROR: a call callflow cannot account for is what the operator's `unknown` alarm is for.
        log.error("stuck placed job marked unknown", call_id=attempt.call_id, reason=reason)
        publish(repo, publisher, {**job, **changes})
    return stored

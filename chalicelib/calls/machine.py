"""The `/machine` callback (Plivo's asynchronous machine detection): record that the current attempt reached a
machine and, for `voicemail:<Template>`, move the live call to that step through Plivo's transfer API.

The write is conditional like the hangup's: a late or replayed callback of an earlier attempt changes
nothing (`hangup.ignore_reason`). Every callback that brings the attempt's RequestUUID and CallUUID keeps the
mapping, so the stuck-`placed` sweep can find the call's record later.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlencode

from chalicelib.calls.call_body import voicemail_template
from chalicelib.calls.hangup import (
    MAX_TRIES,
    CampaignLookup,
    _attempts,
    _ids_with,
    detection_of,
    ignore_reason,
)
from chalicelib.calls.plivo_api import MissingId
from chalicelib.logs import log

if TYPE_CHECKING:
    from chalicelib.calls.jobs import Job, JobRepository
    from chalicelib.calls.plivo_api import PlivoClient


def voicemail_url(base_url: str, template: str, call_id: str) -> str:
    """Where the transfer sends the call: the voicemail template as a step of this job's conversation."""
    return f"{base_url.rstrip('/')}/answer?{urlencode({'step': template, 'call_id': call_id})}"


def machine_changes(job: Mapping[str, Any], params: Mapping[str, str], now: float) -> dict[str, Any]:
    """Pure: the fields this callback sets on the job (empty: nothing to record)."""
    attempt = _attempts(job)
    changes: dict[str, Any] = {}
    request_uuid = (params.get("RequestUUID") or "").strip()
    call_uuid = (params.get("CallUUID") or "").strip()
    if request_uuid and _uuid_of(job, "request_uuids", attempt) != request_uuid:
        changes["request_uuids"] = _ids_with(job, "request_uuids", attempt, request_uuid)
    if call_uuid and _uuid_of(job, "call_uuids", attempt) != call_uuid:
        changes["call_uuids"] = _ids_with(job, "call_uuids", attempt, call_uuid)
    if is_machine(params) and not (job.get("machine") is True and job.get("machine_attempt") == attempt):
        changes.update(machine=True, machine_attempt=attempt)
    if changes:
        changes["updated_at"] = now
    return changes


def is_machine(params: Mapping[str, str]) -> bool:
    return (params.get("Machine") or "").strip().lower() == "true"


def _uuid_of(job: Mapping[str, Any], field: str, attempt: int) -> str | None:
    ids = job.get(field)
    return ids.get(str(attempt)) if isinstance(ids, Mapping) else None


def record_machine(
    repo: JobRepository,
    call_id: str,
    params: Mapping[str, str],
    now: float,
    *,
    base_url: Callable[[], str | None],
    plivo: Callable[[], PlivoClient],
    campaigns: CampaignLookup | None = None,
) -> str:
    """Apply one machine-detection callback; returns what happened (for logs and tests). Raises only for
    callflow's own faults (DynamoDB), so the route answers 500 and Plivo may try again."""
    fields: dict[str, Any] = {"call_id": call_id, "call_uuid": params.get("CallUUID") or ""}
    job: Job | None = None
    for _ in range(MAX_TRIES):
        job = repo.get(call_id) if call_id else None
        if job is None:
            log.warning("machine callback for an unknown job ignored", **fields)
            return "unknown job"
        reason = ignore_reason(job, params)
        if reason:
            log.info(f"machine callback ignored: {reason}", status=job.get("status"), **fields)
            return "ignored"
        changes = machine_changes(job, params, now)
        if not changes:
            break  # a repeat of what is stored already
        if repo.record_outcome(call_id, job["status"], _attempts(job), changes):
            job = cast("Job", {**job, **changes})
            break
    else:
        log.error("machine callback not recorded: job kept changing", **fields)
        return "not recorded"
    if not is_machine(params):
        log.info("machine callback without Machine=true: ids kept", **fields)
        return "not a machine"
    campaign = None
    name = job.get("campaign")
    if campaigns is not None and not job.get("machine_detection") and isinstance(name, str) and name:
        campaign = campaigns(name)
    template = voicemail_template(detection_of(job, campaign))
    if template is None:
        log.info("machine answered", **fields)
        return "machine"
    if job.get("voicemail") is True:
        return "already transferred"
    return _transfer(repo, job, template, params, now, base_url, plivo, fields)


def _transfer(
    repo: JobRepository,
    job: Job,
    template: str,
    params: Mapping[str, str],
    now: float,
    base_url: Callable[[], str | None],
    plivo: Callable[[], PlivoClient],
    fields: dict[str, Any],
) -> str:
    base = base_url()
    if not base:
        log.error("machine answered; no URL to transfer the call to (set PUBLIC_BASE_URL)", **fields)
        return "no base url"
    url = voicemail_url(base, template, job["call_id"])
    try:
        result = plivo().transfer((params.get("CallUUID") or "").strip(), url)
    except MissingId:
        log.warning("machine callback without CallUUID: the call cannot be transferred", **fields)
        return "no call_uuid"
    if not result.ok:
        # 404: the call ended meanwhile (its hangup settles the job); no reply: Plivo may have done it.
        log.warning(
            "voicemail transfer failed", template=template, status=result.status, cause=result.error, **fields
        )
        return "transfer failed"
    stored = repo.record_outcome(
        job["call_id"], job["status"], _attempts(job), {"voicemail": True, "updated_at": now}
    )
    if not stored:
        # The launcher's own write (dialing -> placed) may have come between: once more, on what is stored.
        current = repo.get(job["call_id"])
        same = current is not None and _attempts(current) == _attempts(job)
        if current is not None and same and not ignore_reason(current, params):
            stored = repo.record_outcome(
                job["call_id"], current["status"], _attempts(job), {"voicemail": True, "updated_at": now}
            )
    log.info("machine answered; call moved to the voicemail step", template=template, stored=stored, **fields)
    return "transferred"

"""Call jobs in DynamoDB: the only module that knows the table's shape and its conditional writes.

Every state change is a conditional UpdateItem, so overlapping launcher runs and repeated Plivo
callbacks cannot dial a job twice or undo each other's work.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypedDict, cast

if TYPE_CHECKING:
    from boto3.resources.base import ServiceResource

STATUS_INDEX = "status-due_at-index"
MAX_KEY_BYTES = 2048  # DynamoDB's limit for a partition key value


class JobStatus(StrEnum):
    """A job's `status` (SPEC "Call jobs"): pending → dialing → placed → completed, or a terminal one."""

    PENDING = "pending"
    DIALING = "dialing"
    PLACED = "placed"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


STATUSES: tuple[str, ...] = tuple(status.value for status in JobStatus)

# A job as the repository hands it out (DynamoDB's Decimals already plain). Producers may write any of the
# optional fields with any type: `call_body.validate_job` checks them before a dial, so code that reads a
# producer-written field treats its value as unchecked. `request_uuids` / `call_uuids` map each attempt
# number (as text) to that attempt's Plivo ids: the hangup callback uses them to tell the current
# attempt's callback from a late or replayed one of an earlier attempt.
Job = TypedDict(
    "Job",
    {
        "call_id": str,
        "status": str,
        "due_at": float,
        "to": str,
        "from": str,
        "headers": dict[str, Any],
        "answer_url": str,
        "answer_method": str,
        "tz": str,
        "window": str,
        "max_attempts": int,
        "caller_name": str,
        "ring_timeout": int,
        "time_limit": int,
        "machine_detection": str,
        "attempts": int,
        "transient_errors": int,
        "request_uuid": str,
        "request_uuids": dict[str, str],
        "call_uuids": dict[str, str],
        "api_id": str,
        "call_uuid": str,
        "outcome": str,
        "hangup_cause": str,
        "duration": int,
        "last_error": str,
        "created_at": float,
        "updated_at": float,
        "claimed_at": float,
        "campaign": str,
        "data": dict[str, Any],
        "responses": dict[str, Any],
        "result": str,
        "last_step": str,
        "paused_due_at": float,
        "outbox": dict[str, Any],
    },
    total=False,
)


def as_job(item: Any) -> Job:
    """A DynamoDB item (Decimals and all) as a Job."""
    return cast(Job, plain(item))


class JobError(Exception):
    """A job operation that cannot be done; the message is one readable line."""


class JobExists(JobError):
    pass


class JobNotFound(JobError):
    pass


class JobStateError(JobError):
    pass


def plain(value: Any) -> Any:
    """DynamoDB's Decimals → int/float, recursively, so items print as JSON and compare naturally."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, set):
        return {plain(v) for v in value}
    return value


def _dynamo(value: Any) -> Any:
    """Python values → what boto3's serializer accepts (floats become Decimals)."""
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, Mapping):
        return {k: _dynamo(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_dynamo(v) for v in value]
    return value


def _pages(operation: Callable[..., dict[str, Any]], kwargs: dict[str, Any]) -> Iterator[Job]:
    """Every item of a paginated Scan or Query, one page in memory at a time."""
    while True:
        page = operation(**kwargs)
        yield from (as_job(i) for i in page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return
        kwargs = {**kwargs, "ExclusiveStartKey": page["LastEvaluatedKey"]}


def _num(value: float) -> Decimal:
    return Decimal(str(round(value, 3)))


def storable_id(call_id: Any) -> bool:
    """Can DynamoDB hold this as a partition key? (non-empty string, at most 2048 bytes)"""
    return isinstance(call_id, str) and bool(call_id) and len(call_id.encode("utf-8")) <= MAX_KEY_BYTES


class JobRepository:
    """Call jobs stored in the table `table` (a boto3 DynamoDB Table resource)."""

    def __init__(self, table: ServiceResource, clock: Callable[[], float] = time.time) -> None:
        self.table: Any = table
        self.clock = clock

    # --- producers and the CLI -------------------------------------------------------------------

    def add(self, item: Mapping[str, Any]) -> Job:
        """Store a new job (status `pending` unless given); JobExists if its call_id is taken."""
        job = dict(item)
        if not job.get("call_id"):
            raise JobError("call_id is required")
        if not storable_id(job["call_id"]):
            raise JobError(f"call_id must be text of at most {MAX_KEY_BYTES} bytes")
        job.setdefault("status", JobStatus.PENDING.value)
        job.setdefault("due_at", self.clock())
        job.setdefault("attempts", 0)
        job.setdefault("created_at", self.clock())
        if job["status"] not in STATUSES:
            raise JobError(f"status {job['status']!r} is not one of {', '.join(STATUSES)}")
        job["status"] = str(job["status"])
        try:
            self.table.put_item(Item=_dynamo(job), ConditionExpression="attribute_not_exists(call_id)")
        except self._conditional_failed():
            raise JobExists(f"job {job['call_id']!r} already exists") from None
        return as_job(_dynamo(job))

    def get(self, call_id: str) -> Job | None:
        """The job, or None — also for an id no DynamoDB key can hold (empty, over 2048 bytes)."""
        if not storable_id(call_id):
            return None
        item = self.table.get_item(Key={"call_id": call_id}, ConsistentRead=True).get("Item")
        return as_job(item) if item else None

    def list(self, status: str | None = None) -> Iterator[Job]:
        """Every job (a Scan, for the CLI), or those with `status` oldest-due first (a GSI Query)."""
        if status is None:  # the dialling lease shares the table; it has no status and is no job
            yield from (item for item in _pages(self.table.scan, {}) if "status" in item)
            return
        yield from self.query_status(status)

    def cancel(self, call_id: str) -> Job:
        """pending → cancelled; JobNotFound or JobStateError (naming the current status) otherwise."""
        if not storable_id(call_id):
            raise JobNotFound(f"job {call_id!r} does not exist")
        try:
            reply = self.table.update_item(
                Key={"call_id": call_id},
                UpdateExpression="SET #s = :cancelled, updated_at = :now",
                ConditionExpression="#s = :pending",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":cancelled": JobStatus.CANCELLED.value,
                    ":pending": JobStatus.PENDING.value,
                    ":now": _num(self.clock()),
                },
                ReturnValues="ALL_NEW",
            )
        except self._conditional_failed():
            current = self.get(call_id)
            if current is None:
                raise JobNotFound(f"job {call_id!r} does not exist") from None
            raise JobStateError(
                f"job {call_id!r} is {current.get('status')}; only pending jobs can be cancelled"
            ) from None
        return as_job(reply["Attributes"])

    # --- the launcher ----------------------------------------------------------------------------

    def query_status(
        self, status: str, due_before: float | None = None, page_size: int = 100
    ) -> Iterator[Job]:
        """Jobs in `status` (due by `due_before`), oldest first, one GSI page in memory at a time.

        The condition is written out, not built from boto3's `Key`: the resource builds conditions with one
        builder per client and resets it on every request, so a page read on the launcher's reader thread
        while workers write could get another request's placeholders (a ValidationException in CI)."""
        expression = "#s = :status"
        values: dict[str, Any] = {":status": str(status)}
        if due_before is not None:
            expression += " AND due_at <= :due"
            values[":due"] = _num(due_before)
        kwargs: dict[str, Any] = {
            "IndexName": STATUS_INDEX,
            "KeyConditionExpression": expression,
            "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": values,
            "ScanIndexForward": True,
            "Limit": page_size,
        }
        yield from _pages(self.table.query, kwargs)

    def claim(self, call_id: str, now: float) -> Job | None:
        """pending (and due) → dialing, counting the attempt; the fresh item, or None if another run won
        or the stored `attempts` is not a number (ADD would refuse it; `fail_pending` settles such a job)."""
        try:
            reply = self.table.update_item(
                Key={"call_id": call_id},
                # `responses` exists from the first dial on, so a conversation step can SET responses.<step>.
                UpdateExpression="SET #s = :dialing, updated_at = :now, claimed_at = :now, "
                "responses = if_not_exists(responses, :empty) ADD attempts :one",
                ConditionExpression="#s = :pending AND due_at <= :now "
                "AND (attribute_not_exists(attempts) OR attribute_type(attempts, :number))",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":dialing": JobStatus.DIALING.value,
                    ":pending": JobStatus.PENDING.value,
                    ":now": _num(now),
                    ":one": 1,
                    ":number": "N",
                    ":empty": {},
                },
                ReturnValues="ALL_NEW",
            )
        except self._conditional_failed():
            return None
        return as_job(reply["Attributes"])

    def fail_pending(self, call_id: str, now: float, last_error: str) -> bool:
        """pending → failed without a claim: a job whose stored numbers no claim can count."""
        return self._conditional_update(
            call_id,
            "SET #s = :failed, updated_at = :now, last_error = :err",
            "#s = :pending",
            {
                ":failed": JobStatus.FAILED.value,
                ":pending": JobStatus.PENDING.value,
                ":now": _num(now),
                ":err": last_error[:1000],
            },
        )

    def release(
        self,
        call_id: str,
        now: float,
        *,
        status: JobStatus,
        due_at: float | None = None,
        last_error: str | None = None,
        count_attempt: bool = False,
        transient_error: bool = False,
        park: bool = False,
    ) -> bool:
        """dialing → `status` (pending/failed/unknown/cancelled). Unless the request may have reached Plivo
        (`count_attempt`), the attempt the claim counted is given back. `park`: its campaign is paused, so
        the job waits at PARKED_DUE_AT (out of the due-jobs query) with its real due_at kept aside."""
        sets = ["#s = :status", "updated_at = :now"]
        values: dict[str, Any] = {
            ":status": str(status),
            ":now": _num(now),
            ":dialing": JobStatus.DIALING.value,
        }
        adds = []
        if park:
            from chalicelib.calls.campaign_store import PARKED_DUE_AT

            sets += ["paused_due_at = due_at", "due_at = :parked"]
            values[":parked"] = PARKED_DUE_AT
        elif due_at is not None:
            sets.append("due_at = :due")
            values[":due"] = _num(due_at)
        if last_error is not None:
            sets.append("last_error = :err")
            values[":err"] = last_error[:1000]
        if not count_attempt:
            adds.append("attempts :minus")
            values[":minus"] = -1
        if transient_error:
            adds.append("transient_errors :one")
            values[":one"] = 1
        else:
            sets.append("transient_errors = :zero")
            values[":zero"] = 0
        expression = "SET " + ", ".join(sets) + (" ADD " + ", ".join(adds) if adds else "")
        return self._conditional_update(call_id, expression, "#s = :dialing", values)

    def mark_placed(
        self,
        call_id: str,
        now: float,
        request_uuid: str | None,
        api_id: str | None,
        *,
        attempt: int,
        request_uuids: Mapping[str, str] | None = None,
    ) -> bool:
        """dialing → placed with Plivo's ids, recorded as attempt `attempt`'s (`request_uuids`: the
        claimed job's map of earlier attempts). If a hangup callback already moved the job on, only the
        ids are recorded (the callback's state wins), and only while the job is still on this attempt:
        a slow reply never overwrites a later attempt's ids."""
        uuid = request_uuid or ""
        known = {str(k): str(v) for k, v in (request_uuids or {}).items()}
        if uuid:
            known[str(attempt)] = uuid
        values: dict[str, Any] = {
            ":placed": JobStatus.PLACED.value,
            ":now": _num(now),
            ":dialing": JobStatus.DIALING.value,
            ":uuid": uuid,
            ":uuids": known,
            ":api": api_id or "",
            ":attempt": attempt,
        }
        done = self._conditional_update(
            call_id,
            "SET #s = :placed, updated_at = :now, request_uuid = :uuid, request_uuids = :uuids, "
            "api_id = :api, transient_errors = :zero REMOVE last_error",
            "#s = :dialing AND attempts = :attempt",
            {**values, ":zero": 0},
        )
        if not done:
            del values[":placed"], values[":dialing"]
            # A callback of this attempt may have got here first; it wrote the same id for this attempt
            # and nothing else in request_uuids, so writing the claimed map plus this id loses nothing.
            self._conditional_update(
                call_id,
                "SET request_uuid = :uuid, request_uuids = :uuids, api_id = :api, updated_at = :now",
                "attempts = :attempt",
                values,
            )
        return done

    def expire_dialing(self, call_id: str, cutoff: float, now: float, message: str) -> bool:
        """A job dialing since before `cutoff` → unknown (its request may have gone out)."""
        return self._conditional_update(
            call_id,
            "SET #s = :unknown, updated_at = :now, last_error = :err",
            "#s = :dialing AND (attribute_not_exists(updated_at) OR updated_at <= :cutoff)",
            {
                ":unknown": JobStatus.UNKNOWN.value,
                ":now": _num(now),
                ":err": message,
                ":dialing": JobStatus.DIALING.value,
                ":cutoff": _num(cutoff),
            },
        )

    # --- the hangup callback ---------------------------------------------------------------------

    def record_outcome(
        self,
        call_id: str,
        expected_status: str,
        expected_attempts: int,
        changes: Mapping[str, Any],
        remove: tuple[str, ...] = (),
        unchanged: Mapping[str, Any] | None = None,
    ) -> bool:
        """Apply a callback's changes only if the job is still as read: status and attempts, and each field
        of `unchanged` still holding the value read (None: still absent), for changes computed from them."""
        names = {"#s": "status"}
        values: dict[str, Any] = {":expected": str(expected_status), ":attempts": expected_attempts}
        sets = []
        for index, (field, value) in enumerate(changes.items()):
            names[f"#f{index}"] = field
            values[f":v{index}"] = _dynamo(str(value) if isinstance(value, StrEnum) else value)
            sets.append(f"#f{index} = :v{index}")
        expression = "SET " + ", ".join(sets)
        if remove:
            expression += " REMOVE " + ", ".join(remove)
        if expected_attempts:
            condition = "#s = :expected AND attempts = :attempts"
        else:
            condition = "#s = :expected AND (attribute_not_exists(attempts) OR attempts = :attempts)"
        for index, (field, value) in enumerate((unchanged or {}).items()):
            names[f"#u{index}"] = field
            if value is None:
                condition += f" AND attribute_not_exists(#u{index})"
            else:
                values[f":u{index}"] = _dynamo(value)
                condition += f" AND #u{index} = :u{index}"
        try:
            self.table.update_item(
                Key={"call_id": call_id},
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except self._conditional_failed():
            return False
        return True

    # --- helpers ---------------------------------------------------------------------------------

    # --- the event outbox ------------------------------------------------------------------------

    def defer_event(self, call_id: str, event: Any) -> None:
        """Keep an event EventBridge refused on its job; the sparse `outbox-index` finds it next run."""
        from chalicelib.calls.events import OUTBOX_SHARD

        self.table.update_item(
            Key={"call_id": call_id},
            UpdateExpression="SET outbox = if_not_exists(outbox, :empty), outbox_shard = :shard, "
            "outbox_at = :now",
            ConditionExpression="attribute_exists(call_id)",
            ExpressionAttributeValues={":empty": {}, ":shard": OUTBOX_SHARD, ":now": _num(self.clock())},
        )
        self.table.update_item(
            Key={"call_id": call_id},
            UpdateExpression="SET outbox.#id = :event",
            ExpressionAttributeNames={"#id": event.id},
            ExpressionAttributeValues={":event": event.stored()},
        )

    def outbox_jobs(self, limit: int = 500) -> Iterator[Job]:
        """Jobs with events still to send, oldest first (the condition written out, as in query_status)."""
        from chalicelib.calls.events import OUTBOX_INDEX, OUTBOX_SHARD

        kwargs: dict[str, Any] = {
            "IndexName": OUTBOX_INDEX,
            "KeyConditionExpression": "outbox_shard = :shard",
            "ExpressionAttributeValues": {":shard": OUTBOX_SHARD},
            "ScanIndexForward": True,
            "Limit": min(limit, 100),
        }
        for count, item in enumerate(_pages(self.table.query, kwargs)):
            if count >= limit:
                return
            yield item

    def clear_events(self, call_id: str, event_ids: Sequence[str], all_sent: bool) -> None:
        """Remove the sent events; with `all_sent`, take the job off the outbox index as well, but only if
        no event was kept meanwhile (a hangup's refused event landing while the outbox was being sent)."""
        if event_ids:
            names = {f"#e{i}": event_id for i, event_id in enumerate(event_ids)}
            self.table.update_item(
                Key={"call_id": call_id},
                UpdateExpression="REMOVE " + ", ".join(f"outbox.#e{i}" for i in range(len(event_ids))),
                ExpressionAttributeNames=names,
            )
        if all_sent:
            self._conditional_update(
                call_id,
                "REMOVE outbox_shard, outbox_at",
                "attribute_not_exists(outbox) OR size(outbox) = :none",
                {":none": 0},
            )

    def _conditional_update(
        self, call_id: str, expression: str, condition: str, values: dict[str, Any]
    ) -> bool:
        names = {"#s": "status"} if "#s" in expression or "#s" in condition else None
        kwargs: dict[str, Any] = {
            "Key": {"call_id": call_id},
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeValues": values,
        }
        if names:
            kwargs["ExpressionAttributeNames"] = names
        try:
            self.table.update_item(**kwargs)
        except self._conditional_failed():
            return False
        return True

    def _conditional_failed(self) -> type[Exception]:
        return cast("type[Exception]", self.table.meta.client.exceptions.ConditionalCheckFailedException)

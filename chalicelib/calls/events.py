"""Outcome events on EventBridge: source `callflow`, one detail-type per change a user acts on.

An event is built from the job as stored (so it is sent after its state is), and its `id` is derived from
the change itself, so a re-sent event carries the same id and consumers can drop the copy. Publishing
happens right after the state write; entries EventBridge refuses (throttling, an outage, a partial failure)
go to the job's outbox (`outbox` map + the sparse GSI `outbox-index`), which the next launcher run drains.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SOURCE = "callflow"
PLACED = "Call Placed"
COMPLETED = "Call Completed"
FAILED = "Call Failed"
UNKNOWN = "Call Unknown"
CANCELLED = "Call Cancelled"
RESULT = "Call Result"
BY_STATUS = {
    "placed": PLACED,
    "completed": COMPLETED,
    "failed": FAILED,
    "unknown": UNKNOWN,
    "cancelled": CANCELLED,
}
BATCH = 10  # PutEvents takes at most 10 entries
MAX_ENTRY_BYTES = 256 * 1024
OUTBOX_INDEX = "outbox-index"
OUTBOX_KEY = "outbox_shard"  # partition of the sparse outbox index; present only while events wait
OUTBOX_SHARD = "pending"


@dataclass(frozen=True)
class Event:
    id: str
    detail_type: str
    detail: dict[str, Any]

    def entry(self, bus: str) -> dict[str, Any]:
        return {
            "Source": SOURCE,
            "DetailType": self.detail_type,
            "Detail": json.dumps(self.detail, default=_plain, sort_keys=True, separators=(",", ":")),
            "EventBusName": bus,
        }

    def stored(self) -> dict[str, Any]:
        """How the event waits in a job's outbox."""
        return {
            "detail_type": self.detail_type,
            "detail": json.dumps(self.detail, default=_plain, sort_keys=True),
        }

    @classmethod
    def from_stored(cls, event_id: str, stored: Mapping[str, Any]) -> Event:
        return cls(event_id, str(stored["detail_type"]), json.loads(stored["detail"]))


def _plain(value: Any) -> Any:
    from decimal import Decimal

    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def event_id(call_id: str, attempt: int, detail_type: str, marker: str) -> str:
    text = "\x1f".join([call_id, str(attempt), detail_type, marker])
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def for_job(job: Mapping[str, Any], detail_type: str) -> Event:
    """The event for a change of `job` (the item as stored after the change)."""
    call_id = str(job.get("call_id", ""))
    attempt = _int(job.get("attempts"))
    marker = str(job.get("result") if detail_type == RESULT else job.get("status"))
    detail = {
        "id": "",
        "call_id": call_id,
        "campaign": job.get("campaign"),
        "attempt": attempt,
        "status": job.get("status"),
        "outcome": job.get("outcome"),
        "result": job.get("result"),
        "responses": job.get("responses") or {},
        "to": job.get("to"),
    }
    ident = event_id(call_id, attempt, detail_type, marker)
    detail["id"] = ident
    return Event(ident, detail_type, detail)


def for_status(job: Mapping[str, Any]) -> Event | None:
    detail_type = BY_STATUS.get(str(job.get("status")))
    return for_job(job, detail_type) if detail_type else None


def batches(events: Sequence[Event]) -> Iterable[Sequence[Event]]:
    for start in range(0, len(events), BATCH):
        yield events[start : start + BATCH]


class Publisher:
    """PutEvents in batches of 10; returns the events EventBridge did not take."""

    def __init__(self, client: Any, bus: str) -> None:
        self.client = client
        self.bus = bus

    def publish(self, events: Sequence[Event]) -> list[Event]:
        refused: list[Event] = []
        for batch in batches(list(events)):
            try:
                reply = self.client.put_events(Entries=[e.entry(self.bus) for e in batch])
            except Exception:  # noqa: BLE001 - any failure leaves the batch in the outbox for the next run
                refused.extend(batch)
                continue
            if reply.get("FailedEntryCount"):
                for event, result in zip(batch, reply.get("Entries", []), strict=False):
                    if result.get("ErrorCode"):
                        refused.append(event)
        return refused

"""The answer route's view of the calls table: read a job for `job`, and record what a step brought.

A small adapter over the boto3 Table (chalicelib/calls/jobs.py owns the job lifecycle; this writes only the
conversation fields `responses`, `last_step` and `result`). Every write is one conditional UpdateItem:
Plivo's retry of the same step request (same CallUUID, step and input) fails the condition and changes
nothing, and an unknown call_id is never created.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from chalicelib.answer.steps import StepRecord
from chalicelib.calls.jobs import plain, storable_id

KEY = "key"  # the request key inside responses.<step>: what makes a retry recognisable


def _dynamo(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: _dynamo(v) for k, v in value.items()}
    return value


def _error_code(exc: Exception) -> tuple[str, str]:
    error = (getattr(exc, "response", None) or {}).get("Error", {})
    return str(error.get("Code", "")), str(error.get("Message", ""))


class StepJournal:
    """Jobs' conversation fields in the calls table `table` (a boto3 DynamoDB Table resource)."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def load(self, call_id: str) -> dict[str, Any] | None:
        """The job (one strongly consistent GetItem: the previous step's write is visible), or None."""
        if not storable_id(call_id):
            return None
        item = self.table.get_item(Key={"call_id": call_id}, ConsistentRead=True).get("Item")
        return plain(item) if item else None

    def record(self, call_id: str, record: StepRecord, has_responses: bool | None = None) -> Any:
        """Write `record` on job `call_id` in one conditional UpdateItem: the job as stored afterwards, or
        None when nothing was written (no such job, or this very request was already recorded).

        `has_responses` (when the job was read) says whether the job has a `responses` map yet; unknown
        (None), the path write is tried and a job without the map (written before v2) gets it whole.
        """
        if record.empty or not storable_id(call_id):
            return None
        if record.response is None:
            return self._update(call_id, record, whole=False)
        if has_responses is False:
            written = self._update(call_id, record, whole=True)
            if written is not None:
                return written
            return self._update(call_id, record, whole=False)  # another request made the map meanwhile
        try:
            return self._update(call_id, record, whole=False, strict=True)
        except _NoResponsesMap:
            pass
        written = self._update(call_id, record, whole=True)
        if written is not None:
            return written
        return self._update(call_id, record, whole=False)

    def _update(self, call_id: str, record: StepRecord, *, whole: bool, strict: bool = False) -> Any:
        names: dict[str, str] = {"#ls": "last_step"}
        values: dict[str, Any] = {":step": record.step}
        sets = ["#ls = :step"]
        condition = "attribute_exists(call_id)"
        if record.response is not None:
            names["#rs"] = "responses"
            values[":resp"] = _dynamo({**record.response, KEY: record.key})
            if whole:
                values[":map"] = {record.step: values.pop(":resp")}
                sets.append("#rs = :map")
                condition += " AND attribute_not_exists(#rs)"
            else:
                names["#s"] = record.step
                names["#k"] = KEY
                values[":key"] = record.key
                sets.append("#rs.#s = :resp")
                condition += " AND (attribute_not_exists(#rs.#s) OR #rs.#s.#k <> :key)"
        if record.result is not None:
            names["#r"] = "result"
            values[":result"] = record.result
            sets.append("#r = :result")
            if record.response is None:  # a retry sets the same result on the same step: nothing new
                condition += " AND (attribute_not_exists(#r) OR #r <> :result OR #ls <> :step)"
        try:
            reply = self.table.update_item(
                Key={"call_id": call_id},
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",  # the same request: the result's event is built from the stored job
            )
        except Exception as exc:
            code, message = _error_code(exc)
            if code == "ConditionalCheckFailedException":
                return None
            if strict and code == "ValidationException" and "document path" in message.lower():
                raise _NoResponsesMap() from None
            raise
        return plain(reply.get("Attributes") or {"call_id": call_id})


class _NoResponsesMap(Exception):
    """The job has no `responses` map yet (written before v2): the path write is invalid."""

"""The campaigns table (CAMPAIGNS_TABLE): campaigns and the do-not-call list, one item each, keyed by `pk`
(`campaign#<name>`, `dnc#<digits>`). A small adapter over the boto3 Table, like JobRepository."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import Any

from chalicelib.calls.campaigns import Campaign, CampaignState
from chalicelib.calls.jobs import plain

CAMPAIGN = "campaign#"
DNC = "dnc#"
BATCH_GET_MAX = 100  # DynamoDB's BatchGetItem limit
SCAN_PAGE = 1000  # items a Scan request reads: short requests, whatever the size of the list


class CampaignExists(Exception):
    pass


class CampaignNotFound(Exception):
    pass


class CampaignStore:
    """Campaigns and the do-not-call list in one table."""

    def __init__(self, table: Any, clock: Callable[[], float] = time.time) -> None:
        self.table = table
        self.clock = clock

    # --- campaigns ---------------------------------------------------------------------------------

    def create(self, campaign: Campaign) -> None:
        now = Decimal(str(round(self.clock(), 3)))
        item = {"pk": CAMPAIGN + campaign.name, **campaign.to_item(), "created_at": now, "updated_at": now}
        try:
            self.table.put_item(Item=item, ConditionExpression="attribute_not_exists(pk)")
        except self._conditional_failed():
            raise CampaignExists(f"campaign {campaign.name!r} exists already") from None

    def get(self, name: str) -> Campaign | None:
        item = self.table.get_item(Key={"pk": CAMPAIGN + name}, ConsistentRead=True).get("Item")
        return Campaign.from_item(item) if item else None

    def item(self, name: str) -> dict[str, Any] | None:
        item = self.table.get_item(Key={"pk": CAMPAIGN + name}, ConsistentRead=True).get("Item")
        return plain(item) if item else None

    def all(self) -> list[Campaign]:
        """Every campaign (the table is small: campaigns and do-not-call numbers only)."""
        return [Campaign.from_item(item) for item in self._scan(CAMPAIGN)]

    def set_state(
        self, name: str, state: CampaignState, allowed_from: Iterable[CampaignState]
    ) -> CampaignState:
        """Move campaign `name` to `state` if it is in one of `allowed_from`; returns the state it had."""
        sources = list(allowed_from)
        values: dict[str, Any] = {":state": str(state), ":now": Decimal(str(round(self.clock(), 3)))}
        values.update({f":from{i}": str(s) for i, s in enumerate(sources)})
        condition = (
            "attribute_exists(pk) AND #st IN (" + ", ".join(f":from{i}" for i in range(len(sources))) + ")"
        )
        try:
            reply = self.table.update_item(
                Key={"pk": CAMPAIGN + name},
                UpdateExpression="SET #st = :state, updated_at = :now",
                ConditionExpression=condition,
                ExpressionAttributeNames={"#st": "state"},
                ExpressionAttributeValues=values,
                ReturnValues="ALL_OLD",
            )
        except self._conditional_failed():
            current = self.get(name)
            if current is None:
                raise CampaignNotFound(f"campaign {name!r} does not exist") from None
            raise ValueError(f"campaign {name!r} is {current.state}; it cannot become {state}") from None
        return CampaignState(reply["Attributes"]["state"])

    def states(self, names: Iterable[str]) -> dict[str, CampaignState | None]:
        """Each campaign's state now (None: no such campaign), in as few BatchGetItem requests as possible."""
        found = {name: None for name in names}  # type: dict[str, CampaignState | None]
        for item in self._batch_get([CAMPAIGN + n for n in found]):
            state = item.get("state")
            found[item["pk"][len(CAMPAIGN) :]] = CampaignState(state) if state in set(CampaignState) else None
        return found

    # --- do-not-call ---------------------------------------------------------------------------------

    def dnc_add(self, number: str, reason: str | None = None) -> None:
        item: dict[str, Any] = {
            "pk": DNC + number,
            "number": number,
            "added_at": Decimal(str(round(self.clock(), 3))),
        }
        if reason:
            item["reason"] = reason[:500]
        self.table.put_item(Item=item)

    def dnc_add_many(self, numbers: Iterable[tuple[str, str | None]]) -> int:
        """Batch writes (25 a request, retried until DynamoDB has taken every item)."""
        count = 0
        now = Decimal(str(round(self.clock(), 3)))
        with self.table.batch_writer(overwrite_by_pkeys=["pk"]) as batch:
            for number, reason in numbers:
                item: dict[str, Any] = {"pk": DNC + number, "number": number, "added_at": now}
                if reason:
                    item["reason"] = reason[:500]
                batch.put_item(Item=item)
                count += 1
        return count

    def dnc_remove(self, number: str) -> bool:
        reply = self.table.delete_item(Key={"pk": DNC + number}, ReturnValues="ALL_OLD")
        return bool(reply.get("Attributes"))

    def dnc_list(self) -> Iterator[dict[str, Any]]:
        for item in self._scan(DNC):
            yield {k: v for k, v in plain(item).items() if k != "pk"}

    def dnc_listed(self, numbers: Iterable[str]) -> set[str]:
        """Which of `numbers` are on the list: one BatchGetItem per 100 numbers, strongly consistent."""
        return {item["number"] for item in self._batch_get([DNC + n for n in dict.fromkeys(numbers)])}

    def check(
        self, numbers: Iterable[str], campaigns: Iterable[str]
    ) -> tuple[set[str], dict[str, CampaignState | None]]:
        """The launcher's one look-up before it dials a batch: listed numbers and campaign states together."""
        number_keys = [DNC + n for n in dict.fromkeys(numbers)]
        names = list(dict.fromkeys(campaigns))
        listed: set[str] = set()
        states: dict[str, CampaignState | None] = {name: None for name in names}
        for item in self._batch_get(number_keys + [CAMPAIGN + n for n in names]):
            pk = item["pk"]
            if pk.startswith(DNC):
                listed.add(pk[len(DNC) :])
            else:
                state = item.get("state")
                states[pk[len(CAMPAIGN) :]] = CampaignState(state) if state in set(CampaignState) else None
        return listed, states

    # --- helpers -------------------------------------------------------------------------------------

    def _scan(self, prefix: str) -> Iterator[dict[str, Any]]:
        from boto3.dynamodb.conditions import Attr

        kwargs: dict[str, Any] = {
            "FilterExpression": Attr("pk").begins_with(prefix),
            "ConsistentRead": True,
            "Limit": SCAN_PAGE,
        }
        while True:
            page = self.table.scan(**kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _batch_get(self, keys: list[str]) -> Iterator[dict[str, Any]]:
        client = self.table.meta.client  # the resource's client: it (de)serializes Python values itself
        name = self.table.name
        for start in range(0, len(keys), BATCH_GET_MAX):
            request: dict[str, Any] = {
                name: {
                    "Keys": [{"pk": k} for k in keys[start : start + BATCH_GET_MAX]],
                    "ConsistentRead": True,
                }
            }
            for _ in range(10):
                reply = client.batch_get_item(RequestItems=request)
                yield from reply.get("Responses", {}).get(name, [])
                request = reply.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(0.05)
            else:
                raise RuntimeError("DynamoDB left keys unprocessed after 10 BatchGetItem tries")

    def _conditional_failed(self) -> Any:
        return self.table.meta.client.exceptions.ConditionalCheckFailedException


CAMPAIGN_INDEX = "campaign-due_at-index"
# Items a query page holds: short requests (a 1 MB page takes moto, the local stack, longer than the CLI's
# 5 s read timeout), still few of them (200 for 100 000 jobs).
PAGE_SIZE = 500
PARKED_DUE_AT = 32503680000  # 3000-01-01: a paused campaign's pending jobs wait here, never due


class CampaignJobs:
    """A campaign's jobs in the calls table, through the sparse GSI `campaign-due_at-index` (only jobs with a
    `campaign` are in it). Pausing parks the pending jobs (their `due_at` moves to PARKED_DUE_AT and the real
    one to `paused_due_at`), so the launcher's due-jobs query never reads them
    while the campaign is paused."""

    def __init__(self, table: Any, clock: Callable[[], float] = time.time) -> None:
        self.table = table
        self.clock = clock

    def jobs(self, campaign: str, page_size: int | None = PAGE_SIZE) -> Iterator[dict[str, Any]]:
        """Every job of `campaign`, one index page in memory at a time (None: DynamoDB's own 1 MB pages)."""
        from boto3.dynamodb.conditions import Key

        return self._query(
            {"IndexName": CAMPAIGN_INDEX, "KeyConditionExpression": Key("campaign").eq(campaign)}, page_size
        )

    def pending(
        self, campaign: str, parked: bool | None = False, page_size: int | None = PAGE_SIZE
    ) -> Iterator[dict[str, Any]]:
        """The pending jobs of `campaign` that are not parked (`parked=True`: those that are; None: both).
        The key condition on `due_at` leaves the other half out, and the filter the jobs in other states."""
        from boto3.dynamodb.conditions import Attr, Key

        key: Any = Key("campaign").eq(campaign)
        if parked is not None:
            key = key & (Key("due_at").gte(PARKED_DUE_AT) if parked else Key("due_at").lt(PARKED_DUE_AT))
        return self._query(
            {
                "IndexName": CAMPAIGN_INDEX,
                "KeyConditionExpression": key,
                "FilterExpression": Attr("status").eq("pending"),
            },
            page_size,
        )

    def _query(self, kwargs: dict[str, Any], page_size: int | None) -> Iterator[dict[str, Any]]:
        if page_size is not None:
            kwargs["Limit"] = page_size
        while True:
            page = self.table.query(**kwargs)
            for item in page.get("Items", []):
                yield plain(item)
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def park(self, call_id: str) -> bool:
        """pending -> pending, parked (idempotent)."""
        return self._update(
            call_id,
            "SET paused_due_at = due_at, due_at = :parked, updated_at = :now",
            "#s = :pending AND attribute_not_exists(paused_due_at)",
            {":parked": PARKED_DUE_AT},
        )

    def unpark(self, call_id: str) -> bool:
        return self._update(
            call_id,
            "SET due_at = paused_due_at, updated_at = :now REMOVE paused_due_at",
            "#s = :pending AND attribute_exists(paused_due_at)",
            {},
        )

    def cancel(self, call_id: str, reason: str) -> bool:
        """pending (parked or not) -> cancelled, its real due_at back (the report shows when it was due)."""
        return self._update(
            call_id,
            "SET #s = :cancelled, last_error = :why, updated_at = :now, "
            "due_at = if_not_exists(paused_due_at, due_at) REMOVE paused_due_at",
            "#s = :pending",
            {":cancelled": "cancelled", ":why": reason},
        )

    def _update(self, call_id: str, expression: str, condition: str, values: dict[str, Any]) -> bool:
        values = {**values, ":now": Decimal(str(round(self.clock(), 3)))}
        if ":pending" in condition:
            values[":pending"] = "pending"
        try:
            self.table.update_item(
                Key={"call_id": call_id},
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues=values,
            )
        except self.table.meta.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

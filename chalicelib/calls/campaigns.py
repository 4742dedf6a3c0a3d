"""Campaigns: a name, a state, and the calling rules that override the settings for their jobs. Pure: the
rules are parsed and applied here; `CampaignStore` (campaign_store.py) keeps them in DynamoDB."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from chalicelib.calls import schedule

NAME_RE = re.compile(r"[A-Za-z0-9-]{1,64}")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
RETRY_OUTCOMES = ("busy", "no-answer", "timeout", "machine")
MAX_WEIGHT = 1000
SEARCH_DAYS = 400  # a year of blackout dates and more: past that no calling moment exists


class CampaignState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    STOPPED = "stopped"


def is_campaign_name(name: object) -> bool:
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float, Decimal)):
        return float(value)
    return None


@dataclass(frozen=True)
class Campaign:
    """What `campaigns create` stores. Every rule is optional; None means "the job's or the setting's"."""

    name: str
    state: CampaignState = CampaignState.ACTIVE
    window: str | None = None
    tz: str | None = None
    days: tuple[int, ...] | None = None
    blackout: tuple[str, ...] = ()
    max_attempts: int | None = None
    retry: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    machine_detection: str | None = None
    caller_id: str | None = None
    weight: float = 1.0

    def problems(self) -> list[str]:
        """Every malformed rule, as sentences (empty when the campaign can be stored)."""
        found: list[str] = []
        if not is_campaign_name(self.name):
            found.append(f"campaign name {self.name!r} must match [A-Za-z0-9-]{{1,64}}")
        if self.window is not None:
            try:
                schedule.parse_window(self.window)
            except schedule.WindowError as exc:
                found.append(str(exc))
        if self.tz is not None:
            try:
                schedule.zone(self.tz)
            except schedule.WindowError as exc:
                found.append(str(exc))
        if self.days is not None and (not self.days or any(d not in range(7) for d in self.days)):
            found.append("days must name at least one weekday")
        if self.max_attempts is not None and not 1 <= self.max_attempts <= 100:
            found.append("max_attempts must be a whole number from 1 to 100")
        if not 0 < self.weight <= MAX_WEIGHT:
            found.append(f"weight must be a number above 0 and at most {MAX_WEIGHT}")
        if self.machine_detection is not None and not machine_detection_ok(self.machine_detection):
            found.append("machine detection must be 'hangup' or 'voicemail:<Template>'")
        return found

    def to_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "name": self.name,
            "state": str(self.state),
            "weight": Decimal(str(self.weight)),
        }
        optional: dict[str, Any] = {
            "window": self.window,
            "tz": self.tz,
            "days": list(self.days) if self.days is not None else None,
            "blackout": list(self.blackout) or None,
            "max_attempts": self.max_attempts,
            "retry": {k: list(v) for k, v in self.retry.items()} or None,
            "machine_detection": self.machine_detection,
            "from": self.caller_id,
        }
        item.update({k: v for k, v in optional.items() if v is not None})
        return item

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Campaign:
        """Tolerant of what another writer stored: a malformed rule reads as absent, never as an error."""
        state = item.get("state")
        days = item.get("days")
        weight = _number(item.get("weight"))
        max_attempts = _number(item.get("max_attempts"))
        retry_raw = item.get("retry") if isinstance(item.get("retry"), Mapping) else {}
        retry = {
            str(k): tuple(int(v) for v in values if _number(v) is not None)
            for k, values in (retry_raw or {}).items()
            if str(k) in RETRY_OUTCOMES and isinstance(values, (list, tuple))
        }
        return cls(
            name=str(item.get("name", "")),
            state=CampaignState(state) if state in set(CampaignState) else CampaignState.ACTIVE,
            window=item.get("window") if isinstance(item.get("window"), str) else None,
            tz=item.get("tz") if isinstance(item.get("tz"), str) else None,
            days=tuple(int(d) for d in days if _number(d) is not None)
            if isinstance(days, (list, tuple))
            else None,
            blackout=tuple(str(d) for d in item.get("blackout") or () if isinstance(d, str)),
            max_attempts=int(max_attempts) if max_attempts is not None else None,
            retry=retry,
            machine_detection=item.get("machine_detection")
            if isinstance(item.get("machine_detection"), str)
            else None,
            caller_id=item.get("from") if isinstance(item.get("from"), str) else None,
            weight=weight if weight is not None and weight > 0 else 1.0,
        )


def machine_detection_ok(value: str) -> bool:
    if value == "hangup":
        return True
    kind, _, template = value.partition(":")
    return kind == "voicemail" and re.fullmatch(r"[A-Za-z0-9]{1,64}", template) is not None


# ---------------------------------------------------------------- when a callee may be called


def _local_date(instant: float, zone: str) -> date:
    return datetime.fromtimestamp(instant, schedule.zone(zone)).date()


def _next_local_midnight(instant: float, zone: str) -> float:
    tzinfo = schedule.zone(zone)
    local = datetime.fromtimestamp(instant, tzinfo)
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tzinfo)
    return max(midnight.timestamp(), instant + 1)


def next_allowed(
    instant: float,
    window: str,
    zones: Iterable[str],
    days: Sequence[int] | None = None,
    blackout: Iterable[str] = (),
    blackout_zone: str | None = None,
) -> float | None:
    """The first moment at or after `instant` that is inside `window` in EVERY zone, on an allowed weekday
    there, and not a blackout date (in `blackout_zone`, else in every zone); None when there is none within
    SEARCH_DAYS (e.g. zones so far apart that the windows never overlap)."""
    zone_list = list(dict.fromkeys(zones)) or ["UTC"]
    blocked = frozenset(blackout)
    blackout_zones = [blackout_zone] if blackout_zone else zone_list
    allowed_days = frozenset(days) if days is not None else None
    limit = instant + SEARCH_DAYS * 86400
    moment = instant
    while moment <= limit:
        moved = max(schedule.next_opening(window, zone, moment) for zone in zone_list)
        if moved > moment:
            moment = moved
            continue
        refused = [
            z
            for z in zone_list
            if allowed_days is not None and _local_date(moment, z).weekday() not in allowed_days
        ]
        refused += [z for z in blackout_zones if _local_date(moment, z).isoformat() in blocked]
        if not refused:
            return moment
        moment = max(_next_local_midnight(moment, z) for z in refused)
    return None

"""The dial-time gate: right before a batch of calls starts, one look-up (BatchGetItem) says which numbers
are on the do-not-call list and which campaigns are no longer active. A verdict is never older than
CHECK_MAX_AGE seconds when its call starts, so `dnc add` and `campaigns pause`, which wait a little longer
than that before they return, are in force for every call that starts after they return."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from chalicelib.calls.campaigns import CampaignState

CHECK_MAX_AGE = 1.0
BATCH_MAX = 80  # candidates per look-up: their numbers and campaigns fit one BatchGetItem (100 keys)


class Verdict(StrEnum):
    DIAL = "dial"
    DO_NOT_CALL = "do-not-call"
    PAUSED = "paused"
    STOPPED = "stopped"


class CheckSource(Protocol):
    def check(
        self, numbers: Iterable[str], campaigns: Iterable[str]
    ) -> tuple[set[str], dict[str, CampaignState | None]]: ...


@dataclass(frozen=True)
class Candidate:
    call_id: str
    number: str  # the normalized `to` (digits), or a sip: URI, which no list holds
    campaign: str | None


def verdicts(
    candidates: Iterable[Candidate], listed: set[str], states: dict[str, CampaignState | None]
) -> dict[str, Verdict]:
    """Pure: what to do with each candidate given the list and the campaign states. A campaign that no longer
    exists is treated as stopped: its jobs have nobody to answer for them."""
    result: dict[str, Verdict] = {}
    for c in candidates:
        if c.number in listed:
            result[c.call_id] = Verdict.DO_NOT_CALL
        elif c.campaign is None:
            result[c.call_id] = Verdict.DIAL
        else:
            state = states.get(c.campaign)
            if state == CampaignState.ACTIVE:
                result[c.call_id] = Verdict.DIAL
            elif state == CampaignState.PAUSED:
                result[c.call_id] = Verdict.PAUSED
            else:
                result[c.call_id] = Verdict.STOPPED
    return result


def check(source: CheckSource, candidates: list[Candidate]) -> dict[str, Verdict]:
    """One request for the whole batch (up to 100 numbers and campaigns per BatchGetItem)."""
    if not candidates:
        return {}
    numbers = [c.number for c in candidates if not c.number.startswith("sip")]
    campaigns = [c.campaign for c in candidates if c.campaign]
    listed, states = source.check(numbers, campaigns)
    return verdicts(candidates, listed, states)

"""Shared pieces of the campaign and pacing end-to-end tests: the campaigns table next to the calls table
in moto, a launcher dialling the real simulator, and reading the simulator's arrivals (a named module, so no
test imports a conftest)."""

from __future__ import annotations

from collections import Counter
from urllib.parse import parse_qs, urlparse

import boto3

from chalicelib.calls.campaign_store import CampaignStore
from chalicelib.calls.launcher import Launcher
from chalicelib.calls.plivo_api import PlivoClient
from chalicelib.settings import Settings
from devtools import local_aws
from tests.calls.launcherlib import AUTH_ID, AUTH_TOKEN

CAMPAIGNS = "callflow-campaigns-test"


def create_campaigns_table():
    """The campaigns table, shaped like the deploy's (infra/resources.json), in the active moto."""
    dynamodb = boto3.resource("dynamodb", region_name=local_aws.REGION)
    return dynamodb.create_table(
        **local_aws.create_table_args(local_aws.cfn_resource("CampaignsTable"), CAMPAIGNS)
    )


def launcher_for(repo, store: CampaignStore | None, url: str, cps: float = 20.0, **kwargs) -> Launcher:
    settings = Settings(**{**Settings.from_env().__dict__, "plivo_cps": cps})
    client = PlivoClient(AUTH_ID, AUTH_TOKEN, url, read_timeout=10.0)
    return Launcher(repo, client, settings, campaigns=store, **kwargs)


def call_id_of(body) -> str:
    return parse_qs(urlparse(body["hangup_url"]).query)["call_id"][0]


def arrivals(sim) -> list[tuple[float, str]]:
    """(arrival time, call_id) of every Call API request the simulator accepted, in arrival order."""
    found = [(r["time"], call_id_of(r["body"])) for r in list(sim.requests) if r.get("status") == 201]
    return sorted(found)


def max_in_one_second(times: list[float]) -> int:
    """The most starts inside any window [t, t + 1)."""
    ordered = sorted(times)
    best, left = 0, 0
    for right, stamp in enumerate(ordered):
        while stamp - ordered[left] >= 1.0:
            left += 1
        best = max(best, right - left + 1)
    return best


def dialled_twice(sim) -> dict[str, int]:
    counts = Counter(call_id for _, call_id in arrivals(sim))
    return {k: v for k, v in counts.items() if v > 1}


class FakeClock:
    """A clock and a sleep that advances it, for the limiter and the lease without waiting."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

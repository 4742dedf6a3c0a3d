"""Campaigns and do-not-call on the launcher (issue 12), against moto server and the Plivo simulator.

- dial: one launcher pass (`chalicelib.handlers.launch`) with CAMPAIGNS_TABLE set over jobs spread across
  active campaigns, a do-not-call list holding numbers that are not among the dialled ones; DynamoDB requests
  per placed call on the product's own client, by purpose (jobs, gate, campaign rules, lease, events).
- paused: CAMPAIGNS campaigns of JOBS due jobs each, half of them paused the way `callflow campaigns pause`
  does it (CampaignStore.set_state, then CampaignJobs.park on each pending job); then one launcher pass with
  a short run budget, the Launcher built as `callflow launch` builds it. Every item returned by a Query or
  Scan page of the product's client is parsed (botocore `after-call`): the goal is that none belongs to a
  paused campaign.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

from bench import fast_moto, harness
from bench.harness import Result
from bench.launcher_throughput import LATENCY, SimProcess
from bench.launcher_throughput import _env as launcher_env
from devtools.local_aws import MotoServer

CALLS = "callflow-calls-campaigns-bench"
CAMPAIGNS = "callflow-campaigns-campaigns-bench"
DNC_NUMBERS = 20
PAUSED_BUDGET_S = 4.0
PARK_THREADS = 8
PARK_SAMPLE = 200  # a paused campaign's jobs parked by CampaignJobs.park; the rest are written parked


def _tables(suffix: str) -> tuple[str, str]:
    return f"{CALLS}-{suffix}", f"{CAMPAIGNS}-{suffix}"


def _seed(calls: str, campaigns: str, names: list[str], per_campaign: int, dnc: int) -> None:
    import boto3

    from chalicelib.calls.campaign_store import CampaignStore
    from chalicelib.calls.campaigns import Campaign
    from devtools.local_aws import cfn_resource, create_table_args

    dynamodb = boto3.resource("dynamodb")
    for logical_id, name in (("CallsTable", calls), ("CampaignsTable", campaigns)):
        dynamodb.create_table(**create_table_args(cfn_resource(logical_id), name)).wait_until_exists()
    store = CampaignStore(dynamodb.Table(campaigns))
    for name in names:
        store.create(Campaign(name))
    # Listed numbers nobody dials (area code 650, the jobs dial 415): the check must still be made.
    store.dnc_add_many((f"1650555{i:04d}", "bench") for i in range(dnc))
    now = int(time.time())
    with dynamodb.Table(calls).batch_writer() as batch:
        for c, campaign in enumerate(names):
            for i in range(per_campaign):
                n = c * per_campaign + i
                batch.put_item(
                    Item={
                        "call_id": f"{campaign}-{i:06d}",
                        "campaign": campaign,
                        "status": "pending",
                        # interleaved in due order, so a paused campaign's jobs would sit among the others
                        "due_at": Decimal(now - 3600 - per_campaign + i),
                        "to": f"1415{n % 10_000_000:07d}",
                        "from": "12125550100",
                        "headers": {"Template": "Bench01"},
                        "tz": "UTC",
                        "window": "00:00-23:59",
                    }
                )


def _statuses(calls: str, names: set[str]) -> dict[str, dict[str, int]]:
    import boto3

    table = boto3.resource("dynamodb").Table(calls)
    found: dict[str, dict[str, int]] = {}
    kwargs: dict = {"ProjectionExpression": "#s, campaign", "ExpressionAttributeNames": {"#s": "status"}}
    while True:
        page = table.scan(**kwargs)
        for item in page["Items"]:
            if item.get("campaign") in names:
                per = found.setdefault(item["campaign"], {})
                per[item["status"]] = per.get(item["status"], 0) + 1
        if "LastEvaluatedKey" not in page:
            return found
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _dial_worker(config: dict) -> dict:
    calls, campaigns = _tables(config["suffix"])
    names = [f"Camp{i}" for i in range(config["campaigns"])]
    _seed(calls, campaigns, names, config["per_campaign"], DNC_NUMBERS)
    settings = {
        "PLIVO_API_URL": config["sim_url"],
        "CALLS_TABLE": calls,
        "CAMPAIGNS_TABLE": campaigns,
        "PLIVO_CPS": str(config["cps"]),
    }
    with harness.patched_env(settings):
        from chalicelib import handlers, resources

        resources.reset()
        counter = harness.DynamoCounter(resources.dynamodb_resource().meta.client)
        deadline = time.monotonic() + 600
        started = time.monotonic()
        summary = handlers.launch(remaining_ms=lambda: int((deadline - time.monotonic()) * 1000))
        elapsed = time.monotonic() - started
    return {
        "summary": summary,
        "elapsed": elapsed,
        "dynamodb": counter.summary(),
        "statuses": _statuses(calls, set(names)),
    }


def paused_job(n: int, spec: dict) -> dict:
    """Job n of the paused measurement: campaigns interleaved in due order; a paused campaign's jobs past
    the first PARK_SAMPLE written already parked (`parked_form`), the sample parked by the product."""
    names = spec["names"]
    campaign, i = names[n % len(names)], n // len(names)
    item = {
        "call_id": f"{campaign}-{i:06d}",
        "campaign": campaign,
        "status": "pending",
        "due_at": Decimal(spec["now"] - 3600 - spec["per_campaign"] + i),
        "to": f"1415{n % 10_000_000:07d}",
        "from": "12125550100",
        "headers": {"Template": "Bench01"},
        "tz": "UTC",
        "window": "00:00-23:59",
    }
    if campaign in spec["paused"] and i >= spec["sample"]:
        item = parked_form(item, spec["now"])
    return item


def parked_form(item: dict, now: float) -> dict:
    """What CampaignJobs.park makes of a pending job (checked against the product's own parks each run)."""
    from chalicelib.calls.campaign_store import PARKED_DUE_AT

    return {
        **item,
        "paused_due_at": item["due_at"],
        "due_at": Decimal(PARKED_DUE_AT),
        "updated_at": Decimal(now),
    }


def _campaign_statuses(jobs, names: list[str]) -> dict[str, dict[str, int]]:
    found: dict[str, dict[str, int]] = {}
    for name in names:
        per = found.setdefault(name, {})
        for job in jobs.jobs(name):
            per[job["status"]] = per.get(job["status"], 0) + 1
    return found


def _paused_worker(config: dict) -> dict:
    import boto3

    from chalicelib.calls.campaign_store import CampaignJobs, CampaignStore
    from chalicelib.calls.campaigns import Campaign, CampaignState
    from devtools.local_aws import cfn_resource, create_table_args

    calls, campaigns = _tables(config["suffix"])
    names = [f"Pause{i}" for i in range(config["campaigns"])]
    paused = names[: len(names) // 2]
    per, sample = config["per_campaign"], config.get("sample", PARK_SAMPLE)
    started = time.monotonic()
    dynamodb = boto3.resource("dynamodb")
    for logical_id, name in (("CallsTable", calls), ("CampaignsTable", campaigns)):
        dynamodb.create_table(**create_table_args(cfn_resource(logical_id), name)).wait_until_exists()
    store, jobs = CampaignStore(dynamodb.Table(campaigns)), CampaignJobs(dynamodb.Table(calls))
    for name in names:
        store.create(Campaign(name))
    store.dnc_add_many((f"1650555{i:04d}", "bench") for i in range(DNC_NUMBERS))
    now = int(time.time())
    spec = {"names": names, "per_campaign": per, "now": now, "paused": paused, "sample": sample}
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    written = fast_moto.bulk_write(endpoint, calls, "bench.campaigns:paused_job", len(names) * per, spec)
    seeded = time.monotonic() - started
    # What `callflow campaigns pause NAME` does (without its grace wait): the state, then a park of each
    # pending job the product finds unparked (the sample; the rest were written parked), from PARK_THREADS.
    parked = 0
    with ThreadPoolExecutor(PARK_THREADS) as pool:
        for name in paused:
            store.set_state(name, CampaignState.PAUSED, (CampaignState.ACTIVE,))
            ids = [job["call_id"] for job in jobs.pending(name)]
            parked += sum(pool.map(jobs.park, ids))
    # The written-parked form must be the product's: compare the parks it made with parked_form().
    form_mismatches = 0
    table = dynamodb.Table(calls)
    for name in paused:
        for i in range(min(sample, per, 5)):
            real = table.get_item(Key={"call_id": f"{name}-{i:06d}"}, ConsistentRead=True)["Item"]
            n = names.index(name) + i * len(names)
            mirror = parked_form(paused_job(n, {**spec, "paused": []}), now)
            keys = (set(real) | set(mirror)) - {"updated_at"}
            form_mismatches += sum(1 for k in keys if real.get(k) != mirror.get(k))
    parked_total = sum(1 for name in paused for _ in jobs.pending(name, parked=True))
    paused_s = time.monotonic() - started - seeded
    settings = {
        "PLIVO_API_URL": config["sim_url"],
        "CALLS_TABLE": calls,
        "CAMPAIGNS_TABLE": campaigns,
        "PLIVO_CPS": str(config["cps"]),
    }
    with harness.patched_env(settings):
        from chalicelib import resources
        from chalicelib.calls.launcher import Launcher

        resources.reset()
        counter = harness.DynamoCounter(resources.dynamodb_resource().meta.client, keep_items=True)
        settings_now = resources.settings()
        launcher = Launcher(  # as handlers.launch builds it for `callflow launch` (a run budget, no Lambda)
            resources.job_repository(),
            resources.plivo_client(),
            settings_now,
            run_budget=config["budget"],
            campaigns=resources.campaign_store(),
            lease=resources.dialling_lease(),
            publisher=resources.event_publisher(),
        )
        pass_started = time.monotonic()
        summary = launcher.run()
        pass_s = time.monotonic() - pass_started
    by_campaign: dict[str, int] = {}
    for item in counter.page_items:
        campaign = item.get("campaign") or ""
        if isinstance(campaign, dict):  # DynamoDB's wire form, when no resource has deserialized it yet
            campaign = campaign.get("S", "")
        by_campaign[campaign] = by_campaign.get(campaign, 0) + 1
    statuses = _campaign_statuses(jobs, paused)
    return {
        "summary": summary,
        "written": written,
        "seed_s": round(seeded, 1),
        "pause_s": round(paused_s, 1),
        "pass_s": round(pass_s, 1),
        "parked": parked,
        "parked_total": parked_total,
        "form_mismatches": form_mismatches,
        "paused": paused,
        "page_items_by_campaign": by_campaign,
        "paused_items_read": sum(by_campaign.get(name, 0) for name in paused),
        "active_items_read": sum(v for k, v in by_campaign.items() if k not in paused),
        # items a Query/Scan read but a filter dropped (no page shows them, DynamoDB bills them)
        "filtered_items_read": counter.scanned - counter.returned,
        "paused_dialled": sum(
            n for name in paused for status, n in statuses.get(name, {}).items() if status != "pending"
        ),
        "dynamodb": counter.summary(),
    }


def worker(config: dict) -> dict:
    if config["mode"] == "dial":
        return _dial_worker(config)
    return _paused_worker(config)


def run(moto: MotoServer, names: list[str], quick: bool = False) -> tuple[list[Result], dict]:
    dial_campaigns, dial_per = (4, 10) if quick else (5, 100)
    paused_campaigns, paused_per = (4, 30) if quick else (10, 10_000)
    cps = 50
    env = launcher_env(moto)
    sim = SimProcess(LATENCY)
    suffix = str(int(time.time()))
    try:
        dial = harness.run_worker(
            "campaigns",
            {
                "mode": "dial",
                "suffix": f"dial-{suffix}",
                "campaigns": dial_campaigns,
                "per_campaign": dial_per,
                "cps": cps,
                "sim_url": sim.url,
            },
            env,
            timeout=600,
        )
        sim.reset()
        # 100 000 jobs: on a moto server of its own, bench/fast_moto.py's (moto's own takes over a second
        # per 500-item page and re-sorts the table for every page)
        with fast_moto.FastMotoServer() as fast:
            paused = harness.run_worker(
                "campaigns",
                {
                    "mode": "paused",
                    "suffix": f"paused-{suffix}",
                    "campaigns": paused_campaigns,
                    "per_campaign": paused_per,
                    "cps": cps,
                    "sim_url": sim.url,
                    "budget": PAUSED_BUDGET_S,
                },
                launcher_env(fast),
                timeout=900,
            )
    finally:
        sim.stop()
    jobs = dial_campaigns * dial_per
    placed = dial["summary"].get("placed", 0)
    per_call = dial["dynamodb"]["requests"] / placed if placed else float("inf")
    purposes = ", ".join(f"{k} {v}" for k, v in sorted(dial["dynamodb"]["purposes"].items()))
    tag = f"CPS {cps}, {jobs} jobs in {dial_campaigns} campaigns, {DNC_NUMBERS} listed numbers"
    half = paused_campaigns // 2
    results = [
        Result(
            "campaigns",
            f"{tag}: placed in one pass",
            f"{placed} placed, {dial['summary'].get('skipped', 0)} skipped",
            f"{jobs} placed",
            placed == jobs,
        ),
        Result(
            "campaigns",
            f"{tag}: DynamoDB requests / placed call",
            f"{per_call:.2f} ({purposes})",
            "≤ 2.2",
            per_call <= 2.2,
        ),
        Result(
            "campaigns",
            f"{paused_campaigns} campaigns × {paused_per:,} due jobs, {half} paused: paused jobs' items read "
            "in one pass",
            f"{paused['paused_items_read']} ({paused['active_items_read']:,} active jobs' items read, "
            f"{paused['filtered_items_read']} read and filtered, {paused['paused_dialled']} paused dialled; "
            f"{paused['parked_total']:,} parked)",
            "0",
            paused["paused_items_read"] == 0
            and paused["paused_dialled"] == 0
            and paused["active_items_read"] > 0
            and paused["filtered_items_read"] == 0
            and paused["form_mismatches"] == 0
            and paused["parked"] == half * min(paused_per, PARK_SAMPLE)
            and paused["parked_total"] == half * paused_per,
        ),
    ]
    return results, {"dial": dial, "paused": paused}

"""Launcher throughput against the Plivo simulator (300 ms per Call API request) at CPS 10 and 50.

One launcher pass (`chalicelib.launcher.launch`, the code the Lambda runs) over 500 due jobs in moto
server's calls table. Call starts are the simulator's arrival times of accepted Call API requests.

- achieved CPS = placed / (last start - first start + 1/CPS): n starts spaced exactly 1/CPS apart give
  exactly CPS.
- peak = the most starts inside any 1-second window [t, t + 1).
- DynamoDB requests per placed call = every HTTP request the launcher's DynamoDB client sent (botocore
  `before-send`, retries included) / placed calls from the summary.
- sequential baseline: plivo-python's `client.calls.create` in a loop (what Plivo's guide does), over a
  sample of the same jobs; its rate is extrapolated to all of them.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal

from bench import harness
from bench.harness import Result

TABLE_PREFIX = "callflow-calls-bench"
LATENCY = 0.3


def _table_properties() -> dict:
    """CallsTable's properties from infra/resources.json (the deployed shape), minus what moto ignores."""
    path = harness.ROOT / "infra" / "resources.json"
    try:
        props = dict(json.loads(path.read_text())["Resources"]["CallsTable"]["Properties"])
    except (OSError, KeyError, ValueError):
        props = {
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": n, "AttributeType": t}
                                     for n, t in (("call_id", "S"), ("status", "S"), ("due_at", "N"))],
            "KeySchema": [{"AttributeName": "call_id", "KeyType": "HASH"}],
            "GlobalSecondaryIndexes": [{
                "IndexName": "status-due_at-index",
                "KeySchema": [{"AttributeName": "status", "KeyType": "HASH"},
                              {"AttributeName": "due_at", "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "ALL"},
            }],
        }
    keep = ("BillingMode", "AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes")
    return {k: v for k, v in props.items() if k in keep}


def job(i: int, prefix: str, now: float) -> dict:
    return {
        "call_id": f"{prefix}-{i:05d}",
        "status": "pending",
        "due_at": Decimal(int(now) - 3600 + i),
        "to": f"1415555{i:04d}",
        "from": "14155550000",
        "headers": {"Template": "Bench01", "CustomerName": f"Customer{i}", "Balance": str(i % 1000)},
        "tz": "UTC",
        "window": "00:00-23:59",
    }


def seed_jobs(table_name: str, count: int, prefix: str) -> None:
    import boto3

    dynamodb = boto3.resource("dynamodb")
    table = dynamodb.create_table(TableName=table_name, **_table_properties())
    table.wait_until_exists()
    now = time.time()
    with table.batch_writer() as batch:
        for i in range(count):
            batch.put_item(Item=job(i, prefix, now))


def peak_per_second(times: list[float]) -> int:
    ordered = sorted(times)
    best, j = 0, 0
    for i, start in enumerate(ordered):
        while ordered[j] <= start - 1.0:
            j += 1
        best = max(best, i - j + 1)
    return best


def _launcher_worker(config: dict) -> dict:
    from devtools.plivo_sim import PlivoSimulator

    table_name, jobs, cps = config["table"], config["jobs"], config["cps"]
    seed_jobs(table_name, jobs, config["prefix"])
    sim = PlivoSimulator(harness.AUTH_ID, harness.AUTH_TOKEN, latency=LATENCY).start()
    try:
        settings = {"PLIVO_API_URL": sim.url, "CALLS_TABLE": table_name, "PLIVO_CPS": str(cps)}
        with harness.patched_env(settings):
            from chalicelib import launcher, resources

            resources.reset()
            client = resources.dynamodb_resource().meta.client
            sent: list[str] = []
            client.meta.events.register("before-send.dynamodb",
                                        lambda request, **kw: sent.append(request.headers.get("X-Amz-Target",
                                                                                              b"?")))
            deadline = time.monotonic() + 900
            started = time.monotonic()
            summary = launcher.launch(remaining_ms=lambda: int((deadline - time.monotonic()) * 1000))
            elapsed = time.monotonic() - started
    finally:
        sim.stop()
    starts = sorted(r["time"] for r in sim.requests if r.get("status") == 201)
    ops: dict[str, int] = {}
    for target in sent:
        name = (target.decode() if isinstance(target, bytes) else str(target)).rsplit(".", 1)[-1]
        ops[name] = ops.get(name, 0) + 1
    return {"summary": summary, "starts": starts, "requests": len(sim.requests), "dynamodb": len(sent),
            "dynamodb_ops": ops, "elapsed": elapsed}


def _sequential_worker(config: dict) -> dict:
    import plivo
    import plivo.rest.client as plivo_client_module

    from devtools.plivo_sim import PlivoSimulator

    sim = PlivoSimulator(harness.AUTH_ID, harness.AUTH_TOKEN, latency=LATENCY).start()
    try:
        # plivo-python has no base-URL option; its voice endpoint is a module constant.
        plivo_client_module.API_VOICE_BASE_URI = f"{sim.url}/v1/Account"
        client = plivo.RestClient(harness.AUTH_ID, harness.AUTH_TOKEN)
        now = time.time()
        started = time.monotonic()
        for i in range(config["jobs"]):
            item = job(i, "seq", now)
            base = harness.PUBLIC_BASE_URL
            client.calls.create(
                from_=item["from"], to_=item["to"], answer_url=f"{base}/answer", answer_method="POST",
                hangup_url=f"{base}/hangup?call_id={item['call_id']}", hangup_method="POST",
                sip_headers=",".join(f"{k}={v}" for k, v in item["headers"].items()),
            )
        elapsed = time.monotonic() - started
    finally:
        sim.stop()
    placed = sum(1 for r in sim.requests if r.get("status") == 201)
    return {"placed": placed, "elapsed": elapsed, "rate": placed / elapsed}


def worker(config: dict) -> dict:
    if config["mode"] == "sequential":
        return _sequential_worker(config)
    return _launcher_worker(config)


def _env(moto: harness.MotoServer) -> dict[str, str]:
    env = harness.aws_env(moto.url)
    env.update({
        "PLIVO_AUTH_ID": harness.AUTH_ID,
        "PLIVO_AUTH_TOKEN": harness.AUTH_TOKEN,
        "PUBLIC_BASE_URL": harness.PUBLIC_BASE_URL,
        "CALL_WINDOW": "00:00-23:59",
        "LOG_LEVEL": "INFO",
    })
    return env


def run(moto: harness.MotoServer, names: list[str], quick: bool = False) -> tuple[list[Result], dict]:
    jobs = 40 if quick else 500
    seq_jobs = 5 if quick else 50
    env = _env(moto)
    seq = harness.run_worker("launcher_throughput", {"mode": "sequential", "jobs": seq_jobs}, env)
    results: list[Result] = []
    details: dict = {"sequential": seq}
    for cps in (10, 50):
        table = f"{TABLE_PREFIX}-{cps}-{int(time.time())}"
        out = harness.run_worker("launcher_throughput", {"mode": "launch", "table": table, "jobs": jobs,
                                                         "cps": cps, "prefix": f"cps{cps}"}, env, timeout=600)
        placed = out["summary"].get("placed", 0)
        starts = out["starts"]
        span = (starts[-1] - starts[0] + 1 / cps) if starts else float("inf")
        achieved = placed / span if starts else 0.0
        peak = peak_per_second(starts)
        per_call = out["dynamodb"] / placed if placed else float("inf")
        details[f"cps{cps}"] = {k: v for k, v in out.items() if k != "starts"} | {
            "achieved_cps": achieved, "peak": peak, "span_s": span}
        tag = f"CPS {cps}, {jobs} jobs"
        results += [
            Result("launcher", f"{tag}: placed / due", f"{placed} / {out['summary'].get('due', '?')}",
                   f"{jobs} placed", placed == jobs),
            Result("launcher", f"{tag}: achieved / configured CPS",
                   f"{achieved:.2f} / {cps} = {achieved / cps:.3f}", "≥ 0.95", achieved / cps >= 0.95),
            Result("launcher", f"{tag}: most starts in any 1 s", str(peak), f"≤ {cps}", peak <= cps),
            Result("launcher", f"{tag}: DynamoDB requests / placed call", f"{per_call:.2f}", "≤ 2.1",
                   per_call <= 2.1),
            Result("launcher", f"{tag}: speed-up vs sequential plivo-python",
                   f"{achieved / seq['rate']:.1f}× ({seq['rate']:.2f} calls/s sequential)", "", None),
        ]
    return results, details

"""Launcher throughput against the Plivo simulator (300 ms per Call API request) at CPS 10 and 50.

One launcher pass (`chalicelib.handlers.launch`, the code the Lambda runs) over 500 due jobs in moto
server's calls table. Call starts are the simulator's arrival times of accepted Call API requests.

- achieved CPS = placed / (last start - first start + 1/CPS): n starts spaced exactly 1/CPS apart give
  exactly CPS.
- The simulator runs as its own process (`python -m devtools.plivo_sim`), like Plivo it is another machine:
  its arrival stamps are not delayed by the launcher's threads holding the GIL.
- peak = the most starts inside any 1-second window [t, t + 1).
- DynamoDB requests per placed call = every HTTP request the launcher's DynamoDB client sent (botocore
  `before-send`, retries included) / placed calls from the summary.
- sequential baseline: plivo-python's `client.calls.create` in a loop (what Plivo's guide does), over a
  sample of the same jobs; its rate is extrapolated to all of them.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from decimal import Decimal

from bench import harness
from bench.harness import Result
from devtools.local_aws import MotoServer, aws_env, free_port
from devtools.supervisor import stop_process

TABLE_PREFIX = "callflow-calls-bench"
LATENCY = 0.3


def job(i: int, prefix: str, now: float) -> dict:
    return {
        "call_id": f"{prefix}-{i:05d}",
        "status": "pending",
        "due_at": Decimal(int(now) - 3600 + i),
        "to": f"1415555{i:04d}",
        "from": "12125550100",
        "headers": {"Template": "Bench01", "CustomerName": f"Customer{i}", "Balance": str(i % 1000)},
        "tz": "UTC",
        "window": "00:00-23:59",
    }


def boto3_table(name: str):
    import boto3

    return boto3.resource("dynamodb").Table(name)


def seed_jobs(table_name: str, count: int, prefix: str) -> None:
    import boto3

    from devtools.local_aws import cfn_resource, create_table_args

    dynamodb = boto3.resource("dynamodb")
    # The deployed shape: infra/resources.json's CallsTable through the local stack's own translator.
    table = dynamodb.create_table(**create_table_args(cfn_resource("CallsTable"), table_name))
    table.wait_until_exists()
    now = time.time() - max(0, count - 3600)  # job i is due at now - 3600 + i: every one is due already
    with table.batch_writer() as batch:
        for i in range(count):
            batch.put_item(Item=job(i, prefix, now))


def peak_per_second(times: list[float]) -> int:
    return busiest_window(times)[1]


def busiest_window(times: list[float]) -> tuple[float, int]:
    """(start, count) of the 1-second window [t, t + 1) holding the most starts."""
    ordered = sorted(times)
    best, best_start, j = 0, ordered[0] if ordered else 0.0, 0
    for i, stamp in enumerate(ordered):
        while ordered[j] <= stamp - 1.0:
            j += 1
        if i - j + 1 > best:
            best, best_start = i - j + 1, ordered[j]
    return best_start, best


class SimProcess:
    """The Plivo simulator in process mode on a free port, with its HTTP control endpoints."""

    def __init__(self, latency: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc = subprocess.Popen(
            [
                harness.PYTHON,
                "-m",
                "devtools.plivo_sim",
                "--port",
                str(self.port),
                "--quiet",
                "--auth-id",
                harness.AUTH_ID,
                "--auth-token",
                harness.AUTH_TOKEN,
                "--latency",
                str(latency),
            ],
            cwd=harness.ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self.requests()
                return
            except OSError:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"plivo simulator exited with {self._proc.returncode}") from None
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("plivo simulator did not start within 20 s")

    def requests(self) -> list[dict]:
        with urllib.request.urlopen(f"{self.url}/__sim/requests", timeout=10) as resp:
            return json.loads(resp.read())

    def cpu_seconds(self) -> float:
        return harness.cpu_seconds(self._proc.pid)

    def reset(self) -> None:
        req = urllib.request.Request(
            f"{self.url}/__sim/reset", data=b"{}", method="POST", headers={"Content-Type": "application/json"}
        )
        urllib.request.urlopen(req, timeout=10).close()

    def stop(self) -> None:
        stop_process(self._proc)


def _launcher_worker(config: dict) -> dict:
    table_name, jobs, cps = config["table"], config["jobs"], config["cps"]
    seed_jobs(table_name, jobs, config["prefix"])
    settings = {"PLIVO_API_URL": config["sim_url"], "CALLS_TABLE": table_name, "PLIVO_CPS": str(cps)}
    with harness.patched_env(settings):
        from chalicelib import handlers, resources

        resources.reset()
        counter = harness.DynamoCounter(resources.dynamodb_resource().meta.client)
        published = EventsCounter(resources.events_client())
        deadline = time.monotonic() + 900
        started = time.monotonic()
        cpu = time.process_time()
        summary = handlers.launch(remaining_ms=lambda: int((deadline - time.monotonic()) * 1000))
        elapsed = time.monotonic() - started
        cpu = time.process_time() - cpu
    statuses: dict[str, int] = {}
    table = boto3_table(table_name)
    scan: dict = {}
    while True:
        page = table.scan(ProjectionExpression="#s", ExpressionAttributeNames={"#s": "status"}, **scan)
        for item in page["Items"]:
            if "status" in item:  # the dialling lease item has none
                statuses[item["status"]] = statuses.get(item["status"], 0) + 1
        if "LastEvaluatedKey" not in page:
            break
        scan = {"ExclusiveStartKey": page["LastEvaluatedKey"]}
    return {
        "summary": summary,
        "dynamodb": counter.requests,
        "dynamodb_ops": counter.operations,
        "dynamodb_purposes": counter.purposes,
        "events": published.summary(),
        "elapsed": elapsed,
        "launcher_cpu_s": cpu,
        "statuses": statuses,
    }


class EventsCounter:
    """PutEvents requests of the product's EventBridge client, and the entries EventBridge refused."""

    def __init__(self, client) -> None:
        self.requests = self.entries = self.refused = self.errors = 0
        client.meta.events.register("before-send.events", self._before_send)
        client.meta.events.register("after-call.events", self._after_call)

    def _before_send(self, request, **kwargs) -> None:
        self.requests += 1

    def _after_call(self, http_response, parsed, model, **kwargs) -> None:
        if model.name == "PutEvents":
            self.entries += len(parsed.get("Entries") or [])
            self.refused += int(parsed.get("FailedEntryCount") or 0)
            self.errors += http_response.status_code >= 400

    def summary(self) -> dict:
        return {
            "requests": self.requests,
            "entries": self.entries,
            "refused": self.refused,
            "errors": self.errors,
        }


def _sequential_worker(config: dict) -> dict:
    import plivo
    import plivo.rest.client as plivo_client_module

    # plivo-python has no base-URL option; its voice endpoint is a module constant.
    plivo_client_module.API_VOICE_BASE_URI = f"{config['sim_url']}/v1/Account"
    client = plivo.RestClient(harness.AUTH_ID, harness.AUTH_TOKEN)
    now = time.time()
    placed = 0
    started = time.monotonic()
    for i in range(config["jobs"]):
        item = job(i, "seq", now)
        base = harness.PUBLIC_BASE_URL
        response = client.calls.create(
            from_=item["from"],
            to_=item["to"],
            answer_url=f"{base}/answer",
            answer_method="POST",
            hangup_url=f"{base}/hangup?call_id={item['call_id']}",
            hangup_method="POST",
            sip_headers=",".join(f"{k}={v}" for k, v in item["headers"].items()),
        )
        placed += bool(response.request_uuid)
    elapsed = time.monotonic() - started
    return {"placed": placed, "elapsed": elapsed, "rate": placed / elapsed}


def worker(config: dict) -> dict:
    if config["mode"] == "sequential":
        return _sequential_worker(config)
    return _launcher_worker(config)


def outbox_row(tag: str, out: dict, placed: int) -> Result:
    """Issue 14: DynamoDB requests the event outbox costs per placed call while EventBridge works."""
    outbox = out.get("dynamodb_purposes", {}).get("events", 0)
    per_call = outbox / placed if placed else float("inf")
    ev = out.get("events", {})
    delivered = ev.get("entries", 0) - ev.get("refused", 0)
    return Result(
        "events",
        f"{tag}: outbox DynamoDB requests / placed call (EventBridge up)",
        f"{per_call:.3f} ({outbox} requests; {delivered} events in {ev.get('requests', 0)} PutEvents, "
        f"{ev.get('refused', 0)} refused)",
        "≤ 0.05",
        per_call <= 0.05 and delivered >= placed,
    )


def _env(moto: MotoServer) -> dict[str, str]:
    env = aws_env(moto.url)
    env.update(
        {
            "PLIVO_AUTH_ID": harness.AUTH_ID,
            "PLIVO_AUTH_TOKEN": harness.AUTH_TOKEN,
            "PUBLIC_BASE_URL": harness.PUBLIC_BASE_URL,
            "CALL_WINDOW": "00:00-23:59",
            "LOG_LEVEL": "INFO",
        }
    )
    return env


def run(moto: MotoServer, names: list[str], quick: bool = False) -> tuple[list[Result], dict]:
    jobs = 40 if quick else 500
    seq_jobs = 5 if quick else 50
    # On a moto server of its own, bench/fast_moto.py's (as bench/pacing.py: moto's own cannot serve 50
    # calls per second on this machine); the requests counted are the product's, whichever server answers.
    from bench import fast_moto

    with fast_moto.FastMotoServer() as fast:
        env = _env(fast)
        sim = SimProcess(LATENCY)
        try:
            return _run(fast, sim, env, jobs, seq_jobs)
        finally:
            sim.stop()


def _run(
    moto: MotoServer, sim: SimProcess, env: dict[str, str], jobs: int, seq_jobs: int
) -> tuple[list[Result], dict]:
    seq = harness.run_worker(
        "launcher_throughput", {"mode": "sequential", "jobs": seq_jobs, "sim_url": sim.url}, env
    )
    results: list[Result] = []
    details: dict = {"sequential": seq}
    for cps in (10, 50):
        sim.reset()
        table = f"{TABLE_PREFIX}-{cps}-{int(time.time())}"
        moto_cpu, sim_cpu = harness.cpu_seconds(moto.pid), sim.cpu_seconds()
        out = harness.run_worker(
            "launcher_throughput",
            {
                "mode": "launch",
                "table": table,
                "jobs": jobs,
                "cps": cps,
                "prefix": f"cps{cps}",
                "sim_url": sim.url,
            },
            env,
            timeout=600,
        )
        out["moto_cpu_s"] = harness.cpu_seconds(moto.pid) - moto_cpu
        out["sim_cpu_s"] = sim.cpu_seconds() - sim_cpu
        placed = out["summary"].get("placed", 0)
        starts = sorted(r["time"] for r in sim.requests() if r.get("status") == 201)
        span = (starts[-1] - starts[0] + 1 / cps) if starts else float("inf")
        achieved = placed / span if starts else 0.0
        peak = peak_per_second(starts)
        per_call = out["dynamodb"] / placed if placed else float("inf")
        window_start, _ = busiest_window(starts)
        in_window = [round(t - window_start, 4) for t in starts if window_start <= t < window_start + 1.0]
        per_second = [0] * (int(starts[-1] - starts[0]) + 1 if starts else 0)
        for stamp in starts:
            per_second[int(stamp - starts[0])] += 1
        details[f"cps{cps}"] = out | {
            "achieved_cps": achieved,
            "peak": peak,
            "span_s": span,
            "starts_per_second": per_second,
            "busiest_window_offsets_s": in_window,
        }
        tag = f"CPS {cps}, {jobs} jobs"
        steady = f"{harness.median(per_second[:-1]):g}" if len(per_second) > 1 else "n/a"
        st = out["statuses"]
        lost = jobs - st.get("placed", 0) - st.get("pending", 0)
        results += [
            Result(
                "launcher",
                f"{tag}: placed in one pass (rest stays pending)",
                f"{placed} placed, {st.get('pending', 0)} pending, {lost} other",
                "none lost",
                lost == 0 and placed == st.get("placed", 0),
            ),
            Result(
                "launcher",
                f"{tag}: achieved / configured CPS",
                f"{achieved:.2f} / {cps} = {achieved / cps:.3f}",
                "≥ 0.95",
                achieved / cps >= 0.95,
            ),
            Result(
                "launcher",
                f"{tag}: starts per second, first 3 s; median of full seconds",
                f"{per_second[:3]}; {steady}",
                "",
                None,
            ),
            Result("launcher", f"{tag}: most starts in any 1 s", str(peak), f"≤ {cps}", peak <= cps),
            Result(
                "launcher",
                f"{tag}: DynamoDB requests / placed call",
                f"{per_call:.2f}",
                "≤ 2.1",
                per_call <= 2.1,
            ),
            outbox_row(tag, out, placed),
            Result(
                "launcher",
                f"{tag}: speed-up vs sequential plivo-python",
                f"{achieved / seq['rate']:.1f}× ({seq['rate']:.2f} calls/s sequential)",
                "",
                None,
            ),
        ]
    return results, details

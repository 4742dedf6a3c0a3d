"""`callflow campaigns report` over N jobs beside a bare paginated read of the same items (moto server).

Issue 12 asks: the report over a campaign's jobs takes at most 1.5x the time of a bare paginated read of the
same items, and its memory stays flat (the jobs are streamed, never held).

- bare read: a process that pages through the campaign's jobs on `campaign-due_at-index` (PAGE_SIZE items a
  page, as the report reads them) with the boto3 resource, and only counts them.
- report: a process running `python -m callflow_cli campaigns report NAME --csv FILE --html FILE`, the CLI
  exactly as a user runs it.
- Both are whole processes, timed from start to exit (interpreter start-up and imports on both sides);
  peak RSS comes from os.wait4 for that one process.
- CPU seconds of each process (user + system): the client's own share of the wall.
- flat memory: the report's peak RSS over N jobs minus its peak over N/10 jobs (a second campaign).

`run(n)` starts its own bench/fast_moto.py server (or uses the one given) and returns the numbers as a dict.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench import fast_moto, harness
from chalicelib.calls.campaign_store import PAGE_SIZE

CALLS = "callflow-calls-report-bench"
CAMPAIGNS = "callflow-campaigns-report-bench"
BIG = "Bench"
SMALL = "Bench-small"
STATUSES = ("completed", "completed", "failed", "pending", "cancelled", "unknown", "placed")
OUTCOMES = ("completed", "busy", "no-answer", "machine", "timeout")
BASE = 1_764_547_200  # 2025-12-01 UTC: the jobs' due times (fixed, so every seeding process agrees)
NUMBERS = ("12125550123", "14155550123", "13125550123", "33612345678", "447700900123", "12065550123")

BARE_READ = """
import sys, boto3
from boto3.dynamodb.conditions import Key
table = boto3.resource("dynamodb").Table(sys.argv[1])
kwargs = {"IndexName": "campaign-due_at-index", "KeyConditionExpression": Key("campaign").eq(sys.argv[2]),
          "Limit": int(sys.argv[3])}
count = 0
while True:
    page = table.query(**kwargs)
    count += len(page.get("Items", []))
    if "LastEvaluatedKey" not in page:
        break
    kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
print(count)
"""


def job(i: int, campaign: str, base: float) -> dict[str, Any]:
    status = STATUSES[i % len(STATUSES)]
    item: dict[str, Any] = {
        "call_id": f"{campaign}-{i:07d}",
        "campaign": campaign,
        "status": status,
        "due_at": Decimal(int(base) + i),
        "to": NUMBERS[i % len(NUMBERS)],
        "from": "12125550100",
        "headers": {"Template": "Reminder"},
        "data": {"Name": f"Customer {i}", "When": "2026-12-01 09:30"},
        "attempts": 0 if status == "pending" else 1 + i % 3,
    }
    if status != "pending":
        item["claimed_at"] = Decimal(int(base) + i * 7)
        item["updated_at"] = Decimal(int(base) + i * 7 + 60)
    if status in ("completed", "failed"):
        item["outcome"] = OUTCOMES[i % len(OUTCOMES)]
        item["hangup_cause_name"] = "Normal Hangup"
        item["duration"] = 30 + i % 90
    if status == "completed":
        item["result"] = "confirmed" if i % 3 else "declined"
        item["responses"] = {
            "Reminder": {"Digits": "1" if i % 3 else "2", "at": Decimal(int(base) + i * 7 + 20)},
            "Confirm": {"Speech": f"yes {i % 7}", "at": Decimal(int(base) + i * 7 + 40)},
        }
    return item


def _seed(env: dict[str, str], n: int) -> None:
    import boto3

    from devtools.local_aws import cfn_resource, create_table_args

    kwargs = {
        "endpoint_url": env["AWS_ENDPOINT_URL"],
        "region_name": env["AWS_DEFAULT_REGION"],
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
    }
    dynamodb = boto3.resource("dynamodb", **kwargs)
    for logical_id, name in (("CallsTable", CALLS), ("CampaignsTable", CAMPAIGNS)):
        dynamodb.create_table(**create_table_args(cfn_resource(logical_id), name)).wait_until_exists()
    campaigns = dynamodb.Table(CAMPAIGNS)
    for campaign in (BIG, SMALL):
        campaigns.put_item(
            Item={"pk": f"campaign#{campaign}", "name": campaign, "state": "active", "weight": Decimal(1)}
        )
    for maker, count in (("bench.campaign_report:big_job", n), ("bench.campaign_report:small_job", n // 10)):
        fast_moto.bulk_write(env["AWS_ENDPOINT_URL"], CALLS, maker, max(1, count))


def big_job(i: int) -> dict[str, Any]:
    return job(i, BIG, BASE)


def small_job(i: int) -> dict[str, Any]:
    return job(i, SMALL, BASE)


def _process(argv: list[str], env: dict[str, str]) -> tuple[float, float, str, float]:
    """(wall seconds, peak RSS in MB, stdout, CPU seconds) of one child process."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=harness.ROOT, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} exited {proc.returncode}: {stderr[-500:]}")
    return elapsed, usage.ru_maxrss / 1024, stdout, usage.ru_utime + usage.ru_stime


def run(n: int = 20_000, moto: harness.MotoServer | None = None, rounds: int = 1) -> dict[str, Any]:
    """Seed n jobs (and n/10 in a second campaign), then time the bare read and the report, best of
    `rounds` each (alternating, so a noisy neighbour hurts both alike)."""
    own = moto is None
    server = moto or fast_moto.FastMotoServer().start()
    try:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CALLS_", "CAMPAIGNS_"))},
            **harness.aws_env(server.url),
            "CALLS_TABLE": CALLS,
            "CAMPAIGNS_TABLE": CAMPAIGNS,
            "DEFAULT_TZ": "UTC",
        }
        started = time.perf_counter()
        _seed(env, n)
        seeded = time.perf_counter() - started
        python = sys.executable
        bare: list[float] = []
        report: list[float] = []
        cpu = {"bare": math.inf, "report": math.inf}
        bare_rss = report_rss = 0.0
        with tempfile.TemporaryDirectory() as tmp:
            csv_path, html_path = Path(tmp) / "report.csv", Path(tmp) / "report.html"
            report_argv = [python, "-m", "callflow_cli", "campaigns", "report", BIG]
            report_argv += ["--csv", str(csv_path), "--html", str(html_path)]
            for _ in range(rounds):
                seconds, rss, out, used = _process([python, "-c", BARE_READ, CALLS, BIG, str(PAGE_SIZE)], env)
                cpu["bare"] = min(cpu["bare"], used)
                if int(out) != n:
                    raise AssertionError(f"the bare read saw {out.strip()} jobs, not {n}")
                bare.append(seconds)
                bare_rss = max(bare_rss, rss)
                seconds, rss, out, used = _process(report_argv, env)
                cpu["report"] = min(cpu["report"], used)
                if f"{n} jobs" not in out:
                    raise AssertionError(f"unexpected report output: {out!r}")
                report.append(seconds)
                report_rss = max(report_rss, rss)
            rows = sum(1 for _ in csv_path.open(encoding="utf-8")) - 1
            if rows != n:
                raise AssertionError(f"the CSV has {rows} rows, not {n}")
            small_argv = [python, "-m", "callflow_cli", "campaigns", "report", SMALL, "--csv", str(csv_path)]
            small_argv += ["--html", str(html_path)]
            _, small_rss, _, _ = _process(small_argv, env)
        return {
            "n": n,
            "seed_s": round(seeded, 2),
            "bare_read_s": round(min(bare), 3),
            "report_s": round(min(report), 3),
            "ratio": round(min(report) / min(bare), 3),
            "goal_ratio": 1.5,
            # The client's own CPU: moto's per-page cost dominates the wall time against the local stack.
            "bare_read_cpu_s": round(cpu["bare"], 3),
            "report_cpu_s": round(cpu["report"], 3),
            "bare_read_peak_rss_mb": round(bare_rss, 1),
            "report_peak_rss_mb": round(report_rss, 1),
            "report_small_peak_rss_mb": round(small_rss, 1),
            "rss_growth_mb": round(report_rss - small_rss, 1),
        }
    finally:
        if own:
            server.stop()


if __name__ == "__main__":
    import json

    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 2000), indent=2))


REPORT_JOBS = 100_000
REPORT_JOBS_QUICK = 1_000
FLAT_MB = 5.0


def measure(moto: harness.MotoServer, names: list[str], quick: bool = False) -> tuple[list, dict]:
    """`make bench`'s rows: run(n) with n = REPORT_JOBS (issue 12's 100 000) on a moto server of its own,
    bench/fast_moto.py's: moto's own serializes a 500-item page in over a second and walks the whole table
    for every page (a paged read of 100 000 jobs would take hours there); both sides read through it."""
    from bench.harness import Result

    n = REPORT_JOBS_QUICK if quick else REPORT_JOBS
    out = run(n)
    small = max(1, n // 10)
    return [
        Result(
            "campaigns",
            f"`campaigns report` over {n:,} jobs / bare paginated read (whole processes, wall)",
            f"{out['ratio']:.2f}× ({out['report_s']:.2f} / {out['bare_read_s']:.2f} s)",
            "≤ 1.5×",
            out["ratio"] <= 1.5,
        ),
        Result(
            "campaigns",
            "`campaigns report` / bare read, CPU of the client process",
            f"{out['report_cpu_s'] / out['bare_read_cpu_s']:.2f}× ({out['report_cpu_s']:.2f} / "
            f"{out['bare_read_cpu_s']:.2f} s)",
        ),
        Result(
            "campaigns",
            f"`campaigns report` peak RSS, {n:,} jobs vs {small:,} jobs (streamed)",
            f"{out['report_peak_rss_mb']:.1f} vs {out['report_small_peak_rss_mb']:.1f} MB "
            f"({out['rss_growth_mb']:+.1f} MB)",
            f"≤ +{FLAT_MB:g} MB (flat)",
            out["rss_growth_mb"] <= FLAT_MB,
        ),
    ], out

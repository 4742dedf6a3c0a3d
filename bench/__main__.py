"""`python -m bench [--quick] [--only NAME ...] [--output FILE]`: run the benchmarks, print the table,
write BENCHMARKS.md (full runs only, unless --output is given) and exit 1 if any goal is missed."""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

from bench import (
    answer_latency,
    campaign_report,
    campaigns,
    cold_start,
    conversation,
    harness,
    launcher_throughput,
    memory,
    pacing,
    s3_requests,
)
from bench.harness import Report, Result
from devtools.local_aws import MotoServer

MEASUREMENTS = {
    "cold_start": cold_start,
    "answer_latency": answer_latency,
    "s3_requests": s3_requests,
    "memory": memory,
    "conversation": conversation,
    "launcher_throughput": launcher_throughput,
    "campaigns": campaigns,
    # campaign_report.run(n) is a library function; measure() gives it the bench's interface.
    "campaign_report": SimpleNamespace(run=campaign_report.measure),
    "pacing": pacing,
}


METHOD = """\
## How it is measured

- **Answer latency**: `app.app(event, context)`, the Chalice app object that is the Lambda handler, called
  with an API Gateway REST proxy event: form-encoded POST of Plivo's answer parameters (PLIVO.md),
  `X-Plivo-Signature-V3` + nonce **signed** with the account token (`VERIFY_SIGNATURES=true`, the production
  path), `PUBLIC_BASE_URL` set. 50 templates in moto server's S3 (a real `python -m moto.server` process), all
  warm in the cache, TTL 600 s. Wall time of the call (`perf_counter_ns`), nearest-rank percentiles; GC on as
  in production. The naive handler (`bench/naive.py`) does an S3 GET and a fresh `jinja2.Template` compile per
  request, with no signature check; it is sampled fewer times because each request costs milliseconds.
  Speed-up = naive p50 / product p50.
- **S3 requests**: botocore `before-send`/`after-call` events on the product's own S3 client. After a warm-up
  that fetches every template once, 1000 answers cycling over the 50 templates. "After TTL": TTL 3 s, wait
  past it, then 1000 answers; every request must carry `If-None-Match`/`If-Modified-Since`.
- **Cold start**: wall time from spawning `python` to the first answer being ready (the child stamps
  `time.time()` and leaves with `os._exit`), app (`import app` + first signed answer, which fetches its
  template from S3) against `import boto3` + S3 client + one GET. One unmeasured start each first (bytecode
  cache), then alternating starts; medians.
- **Memory**: one worker process, 100 000 answers through the handler; every 10th names an unknown template
  (10 000 distinct names, each once), the rest cycle over the 50 templates. `VmRSS` after `gc.collect()`
  every 10 000 requests, `VmHWM` (peak) at the end, from `/proc/self/status`.
- **Launcher**: `chalicelib.handlers.launch()` over 500 due jobs in the calls table (created from
  `infra/resources.json` CallsTable) of a `bench/fast_moto.py` server of its own (see Pacing), Plivo
  simulator (`devtools/plivo_sim/`) with 300 ms per Call API request. Starts = arrival times (the kernel's
  receive times) of accepted Call API requests at the simulator.
  Achieved CPS = placed / (last start − first start + 1/CPS); peak = most starts in any window [t, t+1 s).
  DynamoDB requests = every HTTP request of the launcher's DynamoDB client (`before-send`, retries included)
  / placed calls. Sequential baseline: plivo-python `client.calls.create` in a loop over 50 of the jobs
  against the same simulator; speed-up = achieved CPS / sequential calls per second. The counted requests
  include the dialling lease, the outbox drain and the stale-`dialing` sweep of the run.
- **Conversations and metrics** (issues 11 and 14): one worker process, the requests of every series
  interleaved (one of each per round, their order cycling through a 4×4 Williams square: each series runs
  at each position, and right after each other series, equally often), so load hits all sides alike.
  `v1`: the production handler as in "Answer latency" with v1 templates (no `step`, no `call_id`; the
  templates name no `job`/`url`/`result`), metrics flushed once per invocation: an EMF line on stdout,
  flushed after every write as Lambda's Python runtime does (one write(2) a line), into a file
  (`EMF_SINK=pipe`: into the bench's stdout pipe, whose reader, the bench's own process, then competes for
  the worker's cores on every line). The metrics row also shows the ratio in each quarter of the run.
  `v1-style`: the same requests with `chalicelib.answer.conversation.Conversation` swapped, inside the
  worker, for a stand-in that adds no names and records nothing (the handler before conversations).
  `metrics off`: the same requests with `chalicelib.metrics.flush` a no-op inside the worker. `floor`: a bare
  Chalice app whose one route does an HMAC-SHA256 over nonce + body, a Jinja2 `SandboxedEnvironment` render
  of the same template text and a `defusedxml` parse, on the same event. `step`: every 5th round a signed
  `/answer?step=BenchStep&call_id=...` with `Digits=1` (a fresh CallUUID each time), whose template calls
  `result()`: one conditional UpdateItem to moto server's calls table per request, shown apart (no goal).
  DynamoDB requests per answer: botocore `before-send` on the product's DynamoDB client, the worst of 4
  distinct requests of each kind, after a warm-up that fetched every template: a step with Digits whose
  template uses `job` and `result()`; the same without `job`; a v1 answer, and a step without input to a v1
  template; a first answer (`/answer?call_id=...`, no step) whose template uses `job` and `url()`.
- **Events outbox** (issue 14): in the launcher runs above, with EventBridge working (moto server's
  PutEvents on the default bus), the DynamoDB requests whose body is the outbox's (a Query on
  `outbox-index`, an UpdateItem touching `outbox`) / placed calls; the PutEvents requests and the entries
  EventBridge took come from `before-send`/`after-call` on the product's EventBridge client.
- **Campaigns** (issue 12): `handlers.launch()` with `CAMPAIGNS_TABLE` set (tables from
  `infra/resources.json`), 500 due jobs round-robin over 5 active campaigns, 20 numbers on the do-not-call
  list that none of the jobs dials, CPS 50, the simulator at 300 ms; DynamoDB requests (`before-send`,
  shown by purpose: jobs, gate = BatchGetItem of list and campaign states, campaigns = rules GetItem, lease,
  events) / placed calls. Paused campaigns: 10 campaigns × 10 000 due jobs, due times interleaved across
  campaigns, on a moto server of its own (`bench/fast_moto.py`: moto server with its GSI Query answered
  from a sorted, bisected view of the index kept until the table's next write, replies of reads written
  with `json.dumps`, an item's size summed once; tests/bench checks its pages equal moto's own), seeded
  with BatchWriteItem from 3 processes. 5 paused as `callflow campaigns pause` does it
  (`CampaignStore.set_state`, then `CampaignJobs.park` on each pending job the product finds unparked, 8
  threads, no grace wait): the first 200 jobs of each paused campaign are parked by the product, the
  other 9 800 are written in the parked form, which is compared each run with the product's parks; every
  one of the 50 000 must then be parked (`CampaignJobs.pending(parked=True)`). Then one launcher pass
  built as `callflow launch` builds it, with a 4 s run budget, CPS 50. Every item in every Query/Scan page
  of the product's DynamoDB client (`after-call`) is attributed to its `campaign`, and ScannedCount −
  Count summed (items a filter would have read and dropped); goal: no item of a paused campaign, none
  filtered, every paused job still `pending`.
- **Campaign report** (issue 12): `bench/campaign_report.py`'s `run(n)` with n = 100 000 jobs in one
  campaign plus 10 000 in a second, on its own `bench/fast_moto.py` server (moto's own serializes a
  500-item page in over a second and re-sorts the table for every page: a paged read of 100 000 jobs
  takes hours there), seeded from 3 processes. Wall time of `python -m callflow_cli campaigns report NAME
  --csv F --html F` against a process that only pages through the same items (`campaign-due_at-index`,
  the report's page size) and counts them, same server, same run; whole processes both (start-up
  included); CPU seconds of each client process beside. Memory: the report's peak RSS (`wait4`) over
  100 000 jobs minus over 10 000.
- **Pacing** (issue 13): `bench/pacing.py`. A scheduler starts a launcher run (`handlers.launch()`, each in
  a process of its own, as Lambda runs them) every 20 s over one backlog, each with a Lambda-like remaining
  time of 100 s (production: a one-minute schedule and a 300 s timeout, scaled down), 5 runs; the runs hand
  the dialling lease over as in production. The backlog (every job due already) outlasts the measured 100 s.
  Achieved / configured CPS is counted over the starts the simulator saw (300 ms per Call API request; a
  start's time is the kernel's receive time of its request, SO_TIMESTAMPNS), from the first to the last in
  the 100 s, and the most starts in any 1 s window; CPU per start of moto server and the simulator, and the
  machine's busy share, from /proc; CPU per placed call of the runs that dialled (their whole process,
  `time.process_time()`, interpreter start and waiting for the lease included). On its own
  `bench/fast_moto.py` server: moto's own spends ~25 ms of one core per placed call (a new connection and
  thread per request, each UpdateExpression parsed twice, every index page a sort of the table, full garbage
  collections of the stored items that stall every request for up to 2 s) and tops out below 50 calls/s on
  this machine; fast_moto keeps connections open, parses an expression once, keeps each index's sorted view
  through single-item writes, answers one request at a time (as DynamoDB applies each atomically) and skips
  full collections (tests/bench/test_fast_moto.py holds its replies, errors and pages equal to moto's own).
"""


def write_markdown(path: Path, report: Report, machine: dict, elapsed: float, quick: bool) -> None:
    lines = [
        "# callflow benchmarks",
        "",
        "Written by `make bench` (`python -m bench`); do not edit by hand.",
        "",
        "## Machine",
        "",
    ]
    lines += [f"- **{k}**: {v}" for k, v in machine.items()]
    lines += [
        f"- **bench wall time**: {elapsed:.0f} s" + (" (quick mode)" if quick else ""),
        "",
        "Other processes were sharing the CPUs if the load average above is not near 0: treat tail "
        "latencies accordingly.",
        "",
        "## Results",
        "",
        harness.format_table(report.results, True),
        "",
    ]
    if report.errors:
        lines += ["## Errors", ""] + [f"```\n{e}\n```" for e in report.errors] + [""]
    lines += [METHOD, "## Raw numbers", "", "```json", report.to_json(), "```", ""]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sample sizes: a smoke run in ~1 minute")
    parser.add_argument("--only", nargs="+", choices=sorted(MEASUREMENTS), help="run only these measurements")
    parser.add_argument(
        "--output",
        type=Path,
        help="where to write the markdown (default: BENCHMARKS.md on full runs, nothing in --quick mode)",
    )
    args = parser.parse_args(argv)
    output = args.output or (None if args.quick else harness.ROOT / "BENCHMARKS.md")
    machine = harness.machine_details()
    report = Report()
    started = time.monotonic()
    with MotoServer() as moto:
        names = harness.seed_templates(moto.url, 50)
        for key, module in MEASUREMENTS.items():
            if args.only and key not in args.only:
                continue
            t0 = time.monotonic()
            print(f"bench: {key} ...", file=sys.stderr, flush=True)
            try:
                results, details = module.run(moto, names, quick=args.quick)
            except Exception as exc:  # noqa: BLE001 - a broken measurement is a missed goal, not a crash of the whole run
                report.errors.append(f"{key}: {exc}\n{traceback.format_exc(limit=3)}")
                results, details = (
                    [Result(key, "measurement failed", str(exc).splitlines()[0][:80], "runs", False)],
                    {},
                )
            report.add(*results)
            report.details[key] = details | {"seconds": round(time.monotonic() - t0, 1)}
            print(f"bench: {key} done in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    elapsed = time.monotonic() - started
    machine["load average at end (1/5/15 min)"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if not args.quick and not args.only:
        report.add(
            Result(
                "bench",
                "`make bench` wall time, all measurements",
                f"{elapsed:.0f} s",
                "< 600 s",
                elapsed < 600,
            )
        )
    print()
    for k, v in machine.items():
        print(f"{k}: {v}")
    print()
    print(harness.format_table(report.results))
    for error in report.errors:
        print(f"\nERROR {error}", file=sys.stderr)
    if output:
        write_markdown(output, report, machine, elapsed, args.quick)
        print(f"\nwrote {output}")
    missed = report.failed
    verdict = f"{len(missed)} goal(s) missed" if missed else "all goals met"
    print(f"\n{verdict}; {elapsed:.0f} s")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Cold start: a fresh process importing `app` and serving its first answer, against a fresh process that
only imports boto3, creates an S3 client and does one GET (the floor any S3-backed handler pays).

Metric: wall time from spawning the interpreter to the first answer being ready (what Lambda bills as
Init + first invoke). The child reports its own clock after the answer and exits with os._exit, so
interpreter teardown is not counted. The in-process part (first line of the script to answer) is shown too.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

from bench import harness
from bench.harness import Result
from devtools.local_aws import MotoServer

GOAL = 1.15  # issue 12 ("Numbers and zones"): the answer function's cold start stays within 1.15× the floor

PRELUDE = """
import time
T0 = time.perf_counter()
W0 = time.time()
import json, os, sys
EVENT = json.loads(os.environ["BENCH_EVENT"])
class Ctx:
    function_name = "callflow-dev"; memory_limit_in_mb = 256; aws_request_id = "cold"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:callflow-dev"
    def get_remaining_time_in_millis(self): return 30000
def done(ok, detail=""):
    sys.stdout.write(json.dumps({"wall_done": time.time(), "in_process": time.perf_counter() - T0,
                                 "ok": ok, "detail": detail}) + "\\n")
    sys.stdout.flush()
    os._exit(0)
"""

APP_SCRIPT = (
    PRELUDE
    + """
import app
resp = app.app(EVENT, Ctx())
done(resp.get("statusCode") == 200 and os.environ["BENCH_MARK"] in (resp.get("body") or ""),
     str(resp.get("statusCode")) + " " + (resp.get("body") or "")[:200])
"""
)

BASELINE_SCRIPT = (
    PRELUDE
    + """
import boto3
s3 = boto3.client("s3")
body = s3.get_object(Bucket=os.environ["TEMPLATE_BUCKET"], Key=os.environ["BENCH_KEY"])["Body"].read()
done(os.environ["BENCH_MARK"].encode() in body)
"""
)


def _start(script: str, env: dict[str, str]) -> dict:
    spawn = time.time()
    proc = subprocess.run(
        [harness.PYTHON, "-c", script],
        capture_output=True,
        env=env,
        cwd=harness.ROOT,
        timeout=60,
        check=False,
    )
    lines = [x for x in proc.stdout.decode(errors="replace").splitlines() if x.startswith("{")]
    if not lines:
        tail = "\n".join(proc.stderr.decode(errors="replace").splitlines()[-10:])
        raise RuntimeError(f"cold-start child failed (exit {proc.returncode}):\n{tail}")
    out = json.loads(lines[-1])
    if not out["ok"]:
        raise RuntimeError(f"cold-start child served a wrong answer: {out['detail']}")
    out["wall"] = out["wall_done"] - spawn
    return out


def child_env(moto: MotoServer, name: str) -> dict[str, str]:
    """Production answer settings plus the signed event and what its answer must contain."""
    event = harness.api_event(harness.plivo_params(1, template=name), seq=1, signed=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PLIVO_", "TEMPLATE_"))}
    env.update(harness.answer_env(moto.url))
    env.update(
        {
            "BENCH_EVENT": json.dumps(event),
            "BENCH_MARK": f"this is {name}.",
            "BENCH_KEY": f"{harness.PREFIX}{name}.xml",
            "PYTHONPATH": str(harness.ROOT),
        }
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run(moto: MotoServer, names: list[str], quick: bool = False) -> tuple[list[Result], dict]:
    starts = 3 if quick else 11
    env = child_env(moto, names[0])
    samples: dict[str, list[dict]] = {"app": [], "baseline": []}
    _start(BASELINE_SCRIPT, env)  # writes .pyc files and warms the page cache; not counted
    try:
        _start(APP_SCRIPT, env)
    except RuntimeError as exc:
        base = [_start(BASELINE_SCRIPT, env)["wall"] for _ in range(starts)]
        return [
            Result(
                "cold start",
                f"baseline: spawn → boto3 client + 1 GET, median of {starts}",
                f"{harness.median(base) * 1000:.0f} ms",
            ),
            harness.failed_row("cold start", "ratio app / baseline", exc, f"≤ {GOAL:.2f}×"),
        ], {"baseline_ms": harness.median(base) * 1000}
    for _ in range(starts):  # alternate, so background load hits both sides alike
        samples["app"].append(_start(APP_SCRIPT, env))
        samples["baseline"].append(_start(BASELINE_SCRIPT, env))
    med = {k: harness.median([s["wall"] for s in v]) * 1000 for k, v in samples.items()}
    inproc = {k: harness.median([s["in_process"] for s in v]) * 1000 for k, v in samples.items()}
    ratio = med["app"] / med["baseline"]
    results = [
        Result("cold start", f"app: spawn → first answer, median of {starts}", f"{med['app']:.0f} ms"),
        Result(
            "cold start",
            f"baseline: spawn → boto3 client + 1 GET, median of {starts}",
            f"{med['baseline']:.0f} ms",
        ),
        Result(
            "cold start",
            "ratio app / baseline (in-process only)",
            f"{ratio:.2f}× ({inproc['app'] / inproc['baseline']:.2f}×)",
            f"≤ {GOAL:.2f}×",
            ratio <= GOAL,
        ),
    ]
    return results, {"wall_ms": med, "in_process_ms": inproc, "starts": starts}

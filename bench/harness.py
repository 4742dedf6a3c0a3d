"""Shared bench plumbing: workers, the bench's settings and seeded templates, goals and the table.

Every measurement runs its timed part in a fresh worker process (`python -m bench.worker MODULE`), so
environment variables, memoized clients and memory numbers of one measurement never leak into another,
and the JSON logs of the product go to a file instead of the terminal. The local stack itself (moto
server, free ports, the fake AWS environment, signed API Gateway events) comes from devtools/.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from devtools import events, local_aws

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

BUCKET = local_aws.BUCKET
PREFIX = "templates/"
PUBLIC_BASE_URL = "https://bench.execute-api.us-east-1.amazonaws.com/api"
AUTH_ID = "MABENCHBENCHBENCH000"
AUTH_TOKEN = "bench-auth-token-0123456789abcdef"

MotoServer = local_aws.MotoServer  # the names bench/campaign_report.py reaches through harness
aws_env = local_aws.aws_env


# ---------------------------------------------------------------- processes and environment


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (from /proc), to show who the CPU went to."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def answer_env(endpoint: str, ttl: float = 60.0, verify: bool = True) -> dict[str, str]:
    """The answer Lambda's production settings (signatures on), against moto."""
    env = local_aws.aws_env(endpoint)
    env.update(
        {
            "TEMPLATE_BUCKET": BUCKET,
            "TEMPLATE_PREFIX": PREFIX,
            "TEMPLATE_CACHE_TTL": str(ttl),
            "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
            "VERIFY_SIGNATURES": "true" if verify else "false",
            "PLIVO_AUTH_ID": AUTH_ID,
            "PLIVO_AUTH_TOKEN": AUTH_TOKEN,
            "LOG_LEVEL": "INFO",
        }
    )
    return env


@contextlib.contextmanager
def patched_env(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a block (used inside worker processes only)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_worker(module: str, config: Mapping, env: Mapping[str, str], timeout: float = 300) -> dict:
    """Run `bench.<module>.worker(config)` in a fresh interpreter; returns its JSON result.

    The child's stderr (the product's JSON logs) goes to a temp file; its last lines are shown on failure
    (and every log is kept in the directory CALLFLOW_BENCH_LOGS names, when set).
    """
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PLIVO_", "TEMPLATE_"))}
    child_env.update(env)
    child_env["PYTHONPATH"] = str(ROOT)
    with tempfile.TemporaryFile() as err:
        proc = subprocess.run(
            [PYTHON, "-m", "bench.worker", module],
            input=json.dumps(dict(config)).encode(),
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=ROOT,
            env=child_env,
            timeout=timeout,
            check=False,
        )
        err.seek(0)
        log = err.read().decode(errors="replace")
    keep = os.environ.get("CALLFLOW_BENCH_LOGS")  # a directory: every worker's log is kept there
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        Path(keep, f"{module}-{time.time():.3f}-{proc.returncode}.log").write_text(log)
    lines = [line for line in proc.stdout.decode(errors="replace").splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(log.splitlines()[-15:])
        raise RuntimeError(f"bench worker {module} failed (exit {proc.returncode}):\n{tail}")
    result = json.loads(lines[-1])
    result["log_lines"] = log.count("\n")
    return result


# ---------------------------------------------------------------- seeding the template store

TEMPLATE_BODY = """<Response>
  <Speak voice="WOMAN" language="en-US">Hello {{ headers.CustomerName or "there" }}, this is @NAME@.</Speak>
  {% if headers.Balance %}<Speak>Your balance is {{ headers.Balance }} dollars.</Speak>{% endif %}
  <GetDigits action="https://example.com/digits?call={{ call.CallUUID }}" numDigits="1" timeout="5">
    <Speak>Press 1 to talk to {{ sip.To or "an agent" }}, 2 to hear this again.</Speak>
  </GetDigits>
  {% for i in range(2) %}<Wait length="1"/>{% endfor %}
  <Hangup/>
</Response>
"""


def template_names(count: int) -> list[str]:
    return [f"Bench{i:02d}" for i in range(count)]


def template_source(name: str) -> str:
    """A realistic template: headers, call and sip variables, a condition and a loop."""
    return TEMPLATE_BODY.replace("@NAME@", name)


def routes_json(names: list[str]) -> str:
    return json.dumps(
        {
            "default": names[0],
            "rules": [{"when": {"Campaign": f"C{i}"}, "template": n} for i, n in enumerate(names[:5])],
        }
    )


def seed_templates(endpoint: str, count: int = 50) -> list[str]:
    """Create the bucket and upload `count` templates plus routes.json; returns the template names."""
    s3 = local_aws.client("s3", endpoint)
    local_aws.ensure_bucket(s3, BUCKET)
    names = template_names(count)
    for name in names:
        s3.put_object(
            Bucket=BUCKET,
            Key=f"{PREFIX}{name}.xml",
            Body=template_source(name).encode(),
            ContentType="application/xml",
        )
    s3.put_object(
        Bucket=BUCKET,
        Key=f"{PREFIX}routes.json",
        Body=routes_json(names).encode(),
        ContentType="application/json",
    )
    return names


# ---------------------------------------------------------------- the bench's Plivo requests


def plivo_params(seq: int, template: str | None = None, extra: Mapping[str, str] | None = None) -> dict:
    """Plivo's answer parameters for the bench's account (devtools.events builds them)."""
    return events.plivo_params(seq, template, extra, auth_id=AUTH_ID)


def api_event(
    params: Mapping[str, str], path: str = "/answer", method: str = "POST", seq: int = 0, signed: bool = True
) -> dict:
    """The proxy event Lambda receives for Plivo's request, signed with the bench's account token."""
    return events.plivo_event(
        params, base_url=PUBLIC_BASE_URL, token=AUTH_TOKEN, path=path, method=method, seq=seq, signed=signed
    )


# ---------------------------------------------------------------- statistics, goals and the table


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation): the value below which `pct`% of samples fall."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class Result:
    """One row of the table. `goal` is text; `ok` is None when the row is informational."""

    area: str
    metric: str
    value: str
    goal: str = ""
    ok: bool | None = None
    note: str = ""


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    def add(self, *results: Result) -> None:
        self.results.extend(results)

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if r.ok is False]

    def to_json(self) -> str:
        return json.dumps(
            {"results": [asdict(r) for r in self.results], "errors": self.errors, "details": self.details},
            indent=2,
            default=str,
        )


def failed_row(area: str, metric: str, exc: BaseException, goal: str) -> Result:
    """A goal that could not be measured counts as missed; the value says why, briefly."""
    lines = [x for x in str(exc).splitlines() if x.strip()]
    why = (lines[-1] if lines else type(exc).__name__)[:70]
    return Result(area, metric, f"not measured: {why}", goal, False)


def status_text(ok: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "info"}[ok]


def format_table(results: list[Result], markdown: bool = False) -> str:
    headers = ["area", "metric", "value", "goal", "status"]
    rows = [[r.area, r.metric, r.value, r.goal, status_text(r.ok)] for r in results]
    if markdown:
        out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        return "\n".join(out)
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "-" * len(line)]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(out)


def machine_details() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    load = "unknown"
    with contextlib.suppress(OSError):
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "cpu": cpu,
        "cores": f"{os.cpu_count()} logical ({usable} usable by this process)",
        "memory": mem,
        "load average at start (1/5/15 min)": load,
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }


# ---------------------------------------------------------------- counting DynamoDB requests

LEASE_ID = (
    "#launcher-lease"  # chalicelib.calls.pacing.LEASE_ID (not imported: the bench's parent stays light)
)
OUTBOX_INDEX = "outbox-index"  # chalicelib.calls.events.OUTBOX_INDEX


def dynamodb_purpose(operation: str, body: Mapping) -> str:
    """What one DynamoDB request of the product is for, from its operation and JSON body: `events` (the
    outbox: its index query and the updates that touch `outbox`), `lease` (the dialling lease item),
    `gate` (BatchGetItem: do-not-call list and campaign states), `campaigns` (a campaign's rules, GetItem
    on the campaigns table), else `jobs`."""
    key = body.get("Key") or {}
    if (key.get("call_id") or {}).get("S") == LEASE_ID:
        return "lease"
    if operation == "Query" and body.get("IndexName") == OUTBOX_INDEX:
        return "events"
    if operation == "UpdateItem" and "outbox" in str(body.get("UpdateExpression", "")):
        return "events"
    if operation == "BatchGetItem":
        return "gate"
    if operation == "GetItem" and "pk" in key:
        return "campaigns"
    return "jobs"


class DynamoCounter:
    """Every HTTP request a boto3 DynamoDB client sends (botocore `before-send`, retries included), by
    operation and purpose, and (`after-call`) the items each Query/Scan page returned, so a measurement
    can say whose items a pass read. Nothing in the product is patched."""

    def __init__(self, client, keep_items: bool = False) -> None:
        self.keep_items = keep_items
        self.clear()
        client.meta.events.register("before-send.dynamodb", self._before_send)
        client.meta.events.register("after-call.dynamodb", self._after_call)

    def clear(self) -> None:
        self.requests = 0
        self.operations: dict[str, int] = {}
        self.purposes: dict[str, int] = {}
        self.page_items: list[dict] = []
        self.returned = 0  # Count and ScannedCount summed over Query/Scan pages: the items a filter dropped
        self.scanned = 0  # were read all the same (and billed), though no page shows them

    def _before_send(self, request, **kwargs) -> None:
        target = request.headers.get("X-Amz-Target", b"")
        target = target.decode() if isinstance(target, bytes) else str(target)
        operation = target.rsplit(".", 1)[-1] or "?"
        try:
            raw = request.body
            body = json.loads(raw.decode() if isinstance(raw, bytes) else raw or "{}")
        except (ValueError, AttributeError):
            body = {}
        purpose = dynamodb_purpose(operation, body if isinstance(body, dict) else {})
        self.requests += 1
        self.operations[operation] = self.operations.get(operation, 0) + 1
        self.purposes[purpose] = self.purposes.get(purpose, 0) + 1

    def _after_call(self, http_response, parsed, model, **kwargs) -> None:
        if model.name in ("Query", "Scan"):
            self.returned += int(parsed.get("Count") or 0)
            self.scanned += int(parsed.get("ScannedCount") or 0)
            if self.keep_items:
                self.page_items.extend(parsed.get("Items") or [])

    def summary(self) -> dict:
        return {"requests": self.requests, "operations": self.operations, "purposes": self.purposes}

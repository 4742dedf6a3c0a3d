"""Shared bench plumbing: moto server, environment, signed API Gateway events, workers, goals and the table.

Every measurement runs its timed part in a fresh worker process (`python -m bench.worker MODULE`), so
environment variables, memoized clients and memory numbers of one measurement never leak into another,
and the JSON logs of the product go to a file instead of the terminal.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

BUCKET = "callflow-templates"
PREFIX = "templates/"
PUBLIC_BASE_URL = "https://bench.execute-api.us-east-1.amazonaws.com/api"
AUTH_ID = "MABENCHBENCHBENCH000"
AUTH_TOKEN = "bench-auth-token-0123456789abcdef"
REGION = "us-east-1"


# ---------------------------------------------------------------- processes and environment


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (from /proc), to show who the CPU went to."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def aws_env(endpoint: str) -> dict[str, str]:
    """Dummy credentials and every boto3 client pointed at the moto server."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def answer_env(endpoint: str, ttl: float = 60.0, verify: bool = True) -> dict[str, str]:
    """The answer Lambda's production settings (signatures on), against moto."""
    env = aws_env(endpoint)
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


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Terminate a child process we started; kill it if it does not exit within `timeout` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class MotoServer:
    """`python -m moto.server` on a free port, in its own process (real sockets, like production)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen | None = None
        self._log = tempfile.TemporaryFile()

    def start(self) -> MotoServer:
        self._proc = subprocess.Popen(
            [PYTHON, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self._proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto server did not start within 30 s")

    def cpu_seconds(self) -> float:
        return cpu_seconds(self._proc.pid) if self._proc else float("nan")

    def reset(self) -> None:
        """Drop every bucket and table (moto's own reset endpoint)."""
        req = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        urllib.request.urlopen(req, timeout=10).close()

    def stop(self) -> None:
        if self._proc:
            stop_process(self._proc)
        self._log.close()

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


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

    The child's stderr (the product's JSON logs) goes to a temp file; its last lines are shown on failure.
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
    import boto3

    env = aws_env(endpoint)
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET)
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


# ---------------------------------------------------------------- API Gateway events


def plivo_params(seq: int, template: str | None = None, extra: Mapping[str, str] | None = None) -> dict:
    """The parameters Plivo POSTs to an answer URL for an outbound call (PLIVO.md), numbered by `seq`."""
    uuid = f"5260e820-958c-11e4-{seq % 10000:04d}-498d468c{seq % 0xFFFF:04x}"
    params = {
        "Direction": "outbound",
        "From": "1111111111",
        "ALegUUID": uuid,
        "BillRate": "0.00300",
        "To": "sip:abcd150105094929@phone.plivo.com",
        "CallUUID": uuid,
        "ALegRequestUUID": "2202d0ab-a890-4199-8582-e7a2615cb23b",
        "RequestUUID": "2202d0ab-a890-4199-8582-e7a2615cb23b",
        "SIP-H-To": "<sip:abcd150105094929@phone.plivo.com>;tag=6U9J4.uVHI7KyEKSgD8vrPnAKQoR2QXc",
        "CallStatus": "in-progress",
        "Event": "StartApp",
        "SessionStart": "2026-11-26 10:00:00.000000",
        "ParentAuthID": AUTH_ID,
        "CallerName": "Bench",
        "X-PH-CustomerName": f"Customer{seq % 997}",
        "X-PH-Balance": str(seq % 1000),
    }
    if template:
        params["X-PH-Template"] = template
    if extra:
        params.update(extra)
    return params


def sign_v3(url: str, method: str, params: Mapping[str, str], nonce: str, token: str = AUTH_TOKEN) -> str:
    """X-Plivo-Signature-V3 for a request, by the product's own signer (itself checked against plivo-python
    in tests/answer; the bench test checks this wrapper against plivo-python too)."""
    from chalicelib import signature

    parsed = urllib.parse.urlsplit(url)
    base = f"{parsed.scheme}://{parsed.netloc}{parsed.path}"
    query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
    values = {k: [v] for k, v in params.items()}
    if method == "GET":
        return signature.compute(token, base, nonce, {**values, **query})  # the URL's value wins
    return signature.compute(token, base, nonce, query, values)


def proxy_event(
    method: str,
    path: str,
    *,
    domain: str,
    headers: Mapping[str, str],
    query: Mapping[str, list[str]] | None = None,
    body: str | None = None,
    is_base64: bool = False,
    request_id: str = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
    source_ip: str = "18.215.140.21",
    stage: str = "api",
) -> dict:
    """An API Gateway REST (v1) Lambda proxy event for `https://{domain}/{stage}{path}` (the bench's and
    the tests' one builder). `query` is multi-valued, as API Gateway parses a query string."""
    api_id = domain.split(".", 1)[0]
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": dict(headers),
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} if query else None,
        "multiValueQueryStringParameters": {k: list(v) for k, v in query.items()} if query else None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "abc1de",
            "resourcePath": path,
            "httpMethod": method,
            "path": f"/{stage}{path}",
            "stage": stage,
            "domainName": domain,
            "domainPrefix": api_id,
            "apiId": api_id,
            "accountId": "123456789012",
            "requestId": request_id,
            "requestTimeEpoch": 1795687200000,
            "identity": {"sourceIp": source_ip, "userAgent": headers.get("User-Agent", "")},
            "protocol": "HTTP/1.1",
        },
        "body": body,
        "isBase64Encoded": is_base64,
    }


def api_event(
    params: Mapping[str, str], path: str = "/answer", method: str = "POST", seq: int = 0, signed: bool = True
) -> dict:
    """An API Gateway REST (v1) proxy event, as Lambda receives it for `method path` from Plivo."""
    body = urllib.parse.urlencode(params) if method == "POST" else None
    query = None if method == "POST" else {k: [v] for k, v in params.items()}
    headers = {
        "Host": "bench.execute-api.us-east-1.amazonaws.com",
        "User-Agent": "PlivoHTTP/1.0",
        "Accept": "*/*",
        "X-Forwarded-For": "52.9.254.127",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Port": "443",
    }
    if method == "POST":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    if signed:
        nonce = f"{seq:020d}"
        headers["X-Plivo-Signature-V3-Nonce"] = nonce
        headers["X-Plivo-Signature-V3"] = sign_v3(PUBLIC_BASE_URL + path, method, params, nonce)
    return proxy_event(
        method,
        path,
        domain=headers["Host"],
        headers=headers,
        query=query,
        body=body,
        request_id=f"req-{seq}",
        source_ip="52.9.254.127",
    )


class LambdaContext:
    """Just enough of the Lambda context object for Chalice and the handlers."""

    function_name = "callflow-dev"
    function_version = "$LATEST"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:callflow-dev"
    aws_request_id = "bench"
    log_group_name = "/aws/lambda/callflow-dev"
    log_stream_name = "bench"

    def __init__(self, budget_ms: int = 900_000) -> None:
        self._deadline = time.monotonic() + budget_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


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

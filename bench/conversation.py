"""Conversations (issue 11) and metrics (issue 14) on the warm answer path, every side measured in ONE worker
process with the requests interleaved, so a noisy neighbour hurts all sides alike.

Series, one request of each per round (their order cycles through a Williams square, see ORDERS):
- `v1`: the production handler `app.app(event, context)`, signed V3, a v1 template (no step, no `job`, no
  `url`/`result`): the v1 answer path as it runs today, the conversation machinery present but unused.
- `bypass`: the same requests with `chalicelib.answer.conversation.Conversation` replaced by a stand-in that
  gives templates no names and records nothing: the handler as it was before conversations.
- `metrics_off`: the same requests with `chalicelib.metrics.flush` a no-op (no EMF document is written).
  The other series write theirs as Lambda does: `sys.stdout` flushed after every write (awslambdaric's
  `Unbuffered`), so each EMF line is one write(2), whatever PYTHONUNBUFFERED says. The lines go to a file
  (EMF_SINK=pipe: to the bench's stdout pipe instead, see `emf_sink`).
- `floor`: a bare Chalice app's trivial route on the same event: one HMAC-SHA256 over the body, a Jinja2
  sandbox render of the same template text, a defusedxml parse of the result.
- `step` (every STEP_EVERY rounds): a conversation step (`/answer?step=BenchStep&call_id=...` with Digits),
  whose template calls `result()`: one conditional UpdateItem on a job in moto server's calls table.

DynamoDB requests per answer are counted on the product's own client (botocore `before-send`).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import hmac
import os
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator

from bench import harness
from bench.harness import Result
from devtools import events
from devtools.events import LambdaContext
from devtools.local_aws import MotoServer

TABLE = "callflow-calls-conversation-bench"
JOBS = 16
STEP_EVERY = 5
SERIES = ("v1", "bypass", "metrics_off", "floor")
# The order of the series in a round, cycling: a Williams square, so each series runs first, second, third
# and last equally often AND follows each other series equally often (a plain rotation always ran `v1`
# right after `floor`, another app whose code had just displaced the product's in the CPU caches).
ORDERS = tuple(
    tuple(SERIES[i] for i in row) for row in ((0, 1, 3, 2), (1, 2, 0, 3), (2, 3, 1, 0), (3, 0, 2, 1))
)
BLOCKS = 4  # the metrics ratio is also shown per quarter of the run: its spread within one run

# Step templates: the conversation names only where each row needs them.
STEP = """<Response>
  {% if call.Digits == "1" %}{{ result('confirmed') }}
  <Speak>Thank you {{ headers.CustomerName or "there" }}, your appointment is confirmed.</Speak>
  {% else %}{{ result('declined') }}<Speak>Declined. Goodbye.</Speak>{% endif %}
  <Hangup/>
</Response>
"""
STEP_JOB = STEP.replace('headers.CustomerName or "there"', 'job.data.Name or "there"')
FIRST_JOB = """<Response>
  <GetDigits action="{{ url('BenchStepJob') }}" numDigits="1" timeout="5">
    <Speak>Hello {{ job.data.Name or "there" }}, press 1 to confirm.</Speak>
  </GetDigits>
</Response>
"""
TEMPLATES = {"BenchStep": STEP, "BenchStepJob": STEP_JOB, "BenchFirstJob": FIRST_JOB}


def seed(endpoint: str) -> None:
    """The step templates in moto's S3 and JOBS jobs (with a `responses` map, as v2 writes them)."""
    from devtools.local_aws import cfn_resource, client, create_table_args

    s3 = client("s3", endpoint)
    for name, body in TEMPLATES.items():
        s3.put_object(Bucket=harness.BUCKET, Key=f"{harness.PREFIX}{name}.xml", Body=body.encode())
    dynamodb = client("dynamodb", endpoint)
    if TABLE not in dynamodb.list_tables()["TableNames"]:
        dynamodb.create_table(**create_table_args(cfn_resource("CallsTable"), TABLE))
        dynamodb.get_waiter("table_exists").wait(TableName=TABLE, WaiterConfig={"Delay": 0.2})
    for i in range(JOBS):
        dynamodb.put_item(
            TableName=TABLE,
            Item={
                "call_id": {"S": job_id(i)},
                "status": {"S": "placed"},
                "due_at": {"N": str(int(time.time()))},
                "to": {"S": "14155550100"},
                "from": {"S": "12125550100"},
                "attempts": {"N": "1"},
                "data": {"M": {"Name": {"S": f"Customer {i}"}}},
                "responses": {"M": {}},
            },
        )


def job_id(i: int) -> str:
    return f"conv-{i % JOBS:03d}"


def answer_env(endpoint: str) -> dict[str, str]:
    return harness.answer_env(endpoint, ttl=600) | {"CALLS_TABLE": TABLE}


def request(
    seq: int, template: str | None, query: dict[str, str] | None = None, extra: dict | None = None
) -> dict:
    """A signed POST /answer (query in the URL, as Plivo calls an action URL)."""
    params = harness.plivo_params(seq, template=template, extra=extra)
    if not query:
        return harness.api_event(params, seq=seq)
    multi = {k: [v] for k, v in query.items()}
    nonce = f"{seq:020d}"
    url = harness.PUBLIC_BASE_URL + "/answer"
    domain = urllib.parse.urlsplit(harness.PUBLIC_BASE_URL).netloc
    headers = {
        "Host": domain,
        "User-Agent": "PlivoHTTP/1.0",
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Plivo-Signature-V3-Nonce": nonce,
        "X-Plivo-Signature-V3": events.sign_v3(harness.AUTH_TOKEN, "POST", url, params, nonce, multi),
    }
    return events.proxy_event(
        "POST", "/answer", domain=domain, headers=headers, query=multi, body=urllib.parse.urlencode(params)
    )


def step_request(seq: int, step: str = "BenchStep", digits: str | None = "1") -> dict:
    extra = {"Digits": digits, "InputType": "dtmf"} if digits else None
    return request(seq, None, {"step": step, "call_id": job_id(seq)}, extra)


class _NoConversation:
    """The handler before conversations: templates get v1's context only, nothing is recorded."""

    names = None

    def __init__(self, *args, **kwargs) -> None:
        pass

    def finish(self, answer) -> None:
        pass


class _LambdaStdout:
    """`sys.stdout` as Lambda's Python runtime (awslambdaric's bootstrap) wraps it: flushed after every
    write, so every EMF line costs one write(2) here as in production. Counts the writes."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self.writes = 0

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        self._stream.flush()
        self.writes += 1
        return written

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def emf_sink(kind: str) -> Iterator[_LambdaStdout]:
    """Where the worker's EMF lines go while it measures. "file" (the default): file descriptor 1 is a
    temporary file, so a line costs its formatting and a write(2) and nothing else. "pipe": the bench's
    stdout pipe, whose reader is the bench's own parent process: on a small shared machine each line wakes
    it and the worker may lose its core for a scheduler slice, a cost of this harness (its reader competes
    for the worker's 2 cores), not of the metrics; kept to reproduce the numbers measured that way."""
    real = sys.stdout
    real.flush()
    saved = None
    with tempfile.TemporaryFile() as file:
        if kind != "pipe":
            saved = os.dup(1)
            os.dup2(file.fileno(), 1)
        sys.stdout = stdout = _LambdaStdout(real)
        try:
            yield stdout
        finally:
            sys.stdout = real
            real.flush()
            if saved is not None:
                os.dup2(saved, 1)
                os.close(saved)


def floor_handler():
    """The least a signed, templated XML answer costs on Chalice: the floor shown beside the answer path."""
    import defusedxml.ElementTree
    from chalice import Chalice, Response
    from jinja2.sandbox import SandboxedEnvironment

    floor = Chalice("floor")
    template = SandboxedEnvironment(autoescape=True).from_string(harness.template_source("Floor"))
    key = harness.AUTH_TOKEN.encode()

    @floor.route("/answer", methods=["POST"], content_types=["application/x-www-form-urlencoded"])
    def answer():
        body = floor.current_request.raw_body
        nonce = floor.current_request.headers.get("x-plivo-signature-v3-nonce", "")
        hmac.new(key, nonce.encode() + body, hashlib.sha256).digest()
        xml = template.render(headers={"CustomerName": "Floor"}, call={"CallUUID": nonce}, sip={})
        defusedxml.ElementTree.fromstring(xml)
        return Response(body=xml, status_code=200, headers={"Content-Type": "application/xml"})

    return floor


def _count_case(counter: harness.DynamoCounter, app, context, make, times: int = 4) -> dict:
    """DynamoDB requests per answer of one kind of request (the worst of `times` distinct requests)."""
    per: list[int] = []
    for i in range(times):
        counter.clear()
        response = app.app(make(10_000 + i), context)
        if response["statusCode"] != 200 or "<Response" not in (response.get("body") or ""):
            raise AssertionError(f"unexpected answer: {response.get('statusCode')} {response.get('body')!r}")
        per.append(counter.requests)
    return {"max": max(per), "mean": sum(per) / len(per), "operations": counter.operations}


def counts_worker(names: list[str]) -> dict:
    import app
    from chalicelib import resources

    context = LambdaContext()
    app.app(request(1, names[0]), context)  # warm: settings, token, clients
    counter = harness.DynamoCounter(resources.dynamodb_resource().meta.client)
    cases = {
        "step_input_job": lambda s: step_request(s, "BenchStepJob"),
        "step_input": lambda s: step_request(s, "BenchStep"),
        "step_no_input": lambda s: step_request(s, names[1], digits=None),
        "v1": lambda s: request(s, names[s % len(names)]),
        "first_job": lambda s: request(s, "BenchFirstJob", {"call_id": job_id(s)}),
    }
    for make in cases.values():  # every template fetched once, outside the counts
        app.app(make(20_000), context)
    return {name: _count_case(counter, app, context, make) for name, make in cases.items()}


def latency_worker(names: list[str], rounds: int, sink: str = "file") -> dict:
    with emf_sink(sink) as stdout:
        out = _latency(names, rounds)
    out["emf_sink"] = {"kind": sink, "writes": stdout.writes}
    return out


def _latency(names: list[str], rounds: int) -> dict:
    import app
    from chalicelib import metrics
    from chalicelib.answer import conversation

    context = LambdaContext()
    floor = floor_handler()
    v1 = [request(i, names[i % len(names)]) for i in range(256)]
    steps = [step_request(i) for i in range(64)]
    real_conversation, real_flush = conversation.Conversation, metrics.flush

    def v1_call(event):
        return app.app(event, context)

    def bypass_call(event):
        conversation.Conversation = _NoConversation
        try:
            return app.app(event, context)
        finally:
            conversation.Conversation = real_conversation

    def off_call(event):
        metrics.flush = lambda: None
        try:
            return app.app(event, context)
        finally:
            metrics.flush = real_flush

    calls = {
        "v1": v1_call,
        "bypass": bypass_call,
        "metrics_off": off_call,
        "floor": lambda e: floor(e, context),
    }
    for event in v1 + steps[:8]:  # warm-up, checked
        for name, call in calls.items():
            response = call(dict(event))
            if response["statusCode"] != 200 or "<Response" not in (response.get("body") or ""):
                raise AssertionError(
                    f"{name}: {response.get('statusCode')} {str(response.get('body'))[:200]}"
                )
    samples: dict[str, list[float]] = {name: [] for name in (*SERIES, "step")}
    clock = time.perf_counter_ns
    gc.collect()
    for r in range(rounds):
        event = v1[r % len(v1)]
        for name in ORDERS[r % len(ORDERS)]:
            ev = dict(event)
            start = clock()
            response = calls[name](ev)
            samples[name].append((clock() - start) / 1000)
            if response["statusCode"] != 200:
                raise AssertionError(f"{name}: answer {r} returned {response['statusCode']}")
        if r % STEP_EVERY == 0:
            # a fresh CallUUID every time: each step request is new, so each one writes
            ev = dict(step_request(100_000 + r))
            start = clock()
            response = v1_call(ev)
            samples["step"].append((clock() - start) / 1000)
            if response["statusCode"] != 200 or "confirmed" not in response["body"]:
                raise AssertionError(f"step {r}: {response['statusCode']} {response['body'][:200]!r}")
    out: dict = {}
    for name, values in samples.items():
        out[name] = {
            "count": len(values),
            "p50_us": harness.percentile(values, 50),
            "p99_us": harness.percentile(values, 99),
            "max_us": max(values),
        }
    size = rounds // BLOCKS
    out["metrics_ratio_by_block"] = [
        harness.percentile(samples["v1"][b * size : (b + 1) * size], 99)
        / harness.percentile(samples["metrics_off"][b * size : (b + 1) * size], 99)
        for b in range(BLOCKS)
    ]
    return out


def worker(config: dict) -> dict:
    if config["mode"] == "counts":
        return counts_worker(config["names"])
    return latency_worker(config["names"], config["rounds"], config.get("sink", "file"))


def _job_table_items(endpoint: str) -> dict:
    """What the step requests left on one job (a check that they really were recorded)."""
    from devtools.local_aws import client

    item = client("dynamodb", endpoint).get_item(TableName=TABLE, Key={"call_id": {"S": job_id(0)}})["Item"]
    return {"last_step": item.get("last_step", {}).get("S"), "result": item.get("result", {}).get("S")}


def run(moto: MotoServer, names: list[str], quick: bool = False) -> tuple[list[Result], dict]:
    rounds = 1_000 if quick else 10_000
    seed(moto.url)
    env = answer_env(moto.url)
    counts = harness.run_worker("conversation", {"mode": "counts", "names": names}, env)
    sink = os.environ.get("EMF_SINK", "file")
    config = {"mode": "latency", "names": names, "rounds": rounds, "sink": sink}
    lat = harness.run_worker("conversation", config, env)
    # every v1 and v1-style answer wrote its EMF line (the metrics really were on)
    if lat["emf_sink"]["writes"] < 2 * rounds:
        raise AssertionError(f"{lat['emf_sink']['writes']} EMF writes for {rounds} rounds of v1 and v1-style")
    recorded = _job_table_items(moto.url)
    v1, bypass, off, floor, step = (lat[k] for k in ("v1", "bypass", "metrics_off", "floor", "step"))
    n = v1["count"]
    conv_ratio = v1["p99_us"] / bypass["p99_us"]
    metrics_ratio = v1["p99_us"] / off["p99_us"]
    c = counts
    results = [
        Result(
            "conversations",
            f"v1 answer (no step, no job) p50 / p99, same run (n={n} each, interleaved)",
            f"{v1['p50_us']:.0f} / {v1['p99_us']:.0f} µs",
        ),
        Result(
            "conversations",
            "same requests, conversation machinery bypassed (the v1-style handler) p50 / p99",
            f"{bypass['p50_us']:.0f} / {bypass['p99_us']:.0f} µs",
        ),
        Result(
            "conversations",
            "v1 answer p99 / v1-style p99",
            f"{conv_ratio:.3f}",
            "≤ 1.10",
            conv_ratio <= 1.10,
        ),
        Result(
            "conversations",
            "floor: Chalice trivial route + sandbox render + defusedxml + HMAC-SHA256, p50 / p99",
            f"{floor['p50_us']:.0f} / {floor['p99_us']:.0f} µs",
        ),
        Result(
            "conversations",
            "v1 answer / floor (p50 ratio; p99 ratio)",
            f"{v1['p50_us'] / floor['p50_us']:.2f}× ({v1['p99_us'] / floor['p99_us']:.2f}×)",
        ),
        Result(
            "conversations",
            f"step with input + result() (1 UpdateItem to moto) p50 / p99 (n={step['count']})",
            f"{step['p50_us']:.0f} / {step['p99_us']:.0f} µs",
        ),
        Result(
            "conversations",
            "DynamoDB requests / answer: step with input, template uses job",
            f"{c['step_input_job']['max']}",
            "≤ 2",
            c["step_input_job"]["max"] <= 2,
        ),
        Result(
            "conversations",
            "DynamoDB requests / answer: step with input, template without job",
            f"{c['step_input']['max']}",
            "1",
            c["step_input"]["max"] == 1 and recorded["result"] == "confirmed",
        ),
        Result(
            "conversations",
            "DynamoDB requests / answer: no input, job or result() (v1 answer; step without input)",
            f"{c['v1']['max']}; {c['step_no_input']['max']}",
            "0",
            c["v1"]["max"] == 0 and c["step_no_input"]["max"] == 0,
        ),
        Result(
            "conversations",
            "DynamoDB requests / answer: first answer using job",
            f"{c['first_job']['max']}",
            "1",
            c["first_job"]["max"] == 1,
        ),
        Result(
            "metrics",
            "warm answer p99 with metrics / with metrics flushing off (same run)",
            f"{metrics_ratio:.3f} ({v1['p99_us']:.0f} / {off['p99_us']:.0f} µs; "
            f"p50 {v1['p50_us']:.0f} / {off['p50_us']:.0f} µs)",
            "≤ 1.10",
            metrics_ratio <= 1.10,
        ),
        Result(
            "metrics",
            f"the same ratio per quarter of the run (n={n // BLOCKS} each); EMF lines written to",
            " / ".join(f"{r:.2f}" for r in lat["metrics_ratio_by_block"]) + f"; {lat['emf_sink']['kind']}",
        ),
    ]
    return results, {"latency": lat, "dynamodb_per_answer": counts, "job_after_steps": recorded}

"""Keeps the bench from rotting: its signing, events, statistics and report pieces are checked against
peers (plivo-python, Chalice), and each measurement's worker runs once at toy size over real sockets."""

from __future__ import annotations

import json
import urllib.parse

import boto3
import pytest
from chalice.app import Request
from plivo.utils.signature_v3 import validate_v3_signature

from bench import __main__ as bench_main
from bench import (
    campaign_report,
    cold_start,
    conversation,
    harness,
    launcher_throughput,
    s3_requests,
)
from bench.harness import Report, Result
from devtools import events, local_aws

PARAMS = dict(
    urllib.parse.parse_qsl(
        "Direction=outbound&From=1111111111&ALegUUID=5260e820-958c-11e4-b6bf-498d468c930b&BillRate=0.00300"
        "&To=sip%3Aabcd150105094929%40phone.plivo.com&X-PH-Test=Sample"
        "&CallUUID=5260e820-958c-11e4-b6bf-498d468c930b&CallStatus=in-progress&Event=StartApp"
    )
)


@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize("url", ["https://example.com/api/answer", "https://example.com/api/answer?b=2&a=1"])
def test_sign_v3_agrees_with_plivo_python(method: str, url: str) -> None:
    signature = events.sign_v3(harness.AUTH_TOKEN, method, url, PARAMS, "nonce42")
    assert validate_v3_signature(method, url, "nonce42", harness.AUTH_TOKEN, signature, dict(PARAMS))
    assert not validate_v3_signature(method, url, "nonce43", harness.AUTH_TOKEN, signature, dict(PARAMS))


def test_sign_v3_published_vector() -> None:
    params = {"CallUUID": "abc", "From": "14155551234", "To": "14155550000", "Direction": "outbound"}
    assert events.sign_v3("my_auth_token", "POST", "https://example.com/answer/", params, "12345") == (
        "1xRjXfOInXbhQa0/uJjetftLDewemcPLaoVtVIw31vQ="
    )


def test_api_event_is_a_request_chalice_understands() -> None:
    event = harness.api_event(harness.plivo_params(7, template="Bench03"), seq=7)
    request = Request(event)
    assert request.method == "POST"
    assert request.path == "/answer"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    body = dict(urllib.parse.parse_qsl(request.raw_body.decode()))
    assert body["X-PH-Template"] == "Bench03"
    url = harness.PUBLIC_BASE_URL + "/answer"
    nonce, signature = request.headers["x-plivo-signature-v3-nonce"], request.headers["x-plivo-signature-v3"]
    assert validate_v3_signature("POST", url, nonce, harness.AUTH_TOKEN, signature, body)


def test_statistics() -> None:
    values = list(range(1, 101))
    assert harness.percentile(values, 50) == 50
    assert harness.percentile(values, 99) == 99
    assert harness.percentile([5.0], 99) == 5.0
    assert launcher_throughput.peak_per_second([0.0, 0.5, 0.99, 1.0, 1.5, 1.6]) == 4
    assert launcher_throughput.peak_per_second([i * 0.125 for i in range(80)]) == 8


def test_table_and_markdown(tmp_path) -> None:
    report = Report()
    report.add(
        Result("a", "fast", "1 µs", "≤ 2 µs", True),
        Result("a", "slow|pipe", "3", "≤ 2", False),
        Result("b", "info", "x"),
    )
    assert [r.metric for r in report.failed] == ["slow|pipe"]
    text = harness.format_table(report.results)
    assert "MISSED" in text and "met" in text and "info" in text
    out = tmp_path / "BENCHMARKS.md"
    bench_main.write_markdown(out, report, harness.machine_details(), 1.0, quick=True)
    md = out.read_text()
    assert "| a | slow\\|pipe | 3 | ≤ 2 | MISSED |" in md
    assert "**cpu**" in md and "**python**" in md and "**date**" in md
    assert json.loads(md.split("```json\n", 1)[1].split("\n```", 1)[0])["results"][1]["ok"] is False


@pytest.fixture(scope="module")
def moto():
    with local_aws.MotoServer() as server:
        names = harness.seed_templates(server.url, 3)
        yield server, names


@pytest.mark.e2e
def test_s3_counter_sees_conditional_gets(moto) -> None:
    server, names = moto
    env = local_aws.aws_env(server.url)
    s3 = boto3.client(
        "s3",
        endpoint_url=server.url,
        region_name=local_aws.REGION,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    counter = s3_requests.S3Counter(s3)
    key = f"{harness.PREFIX}{names[0]}.xml"
    etag = s3.get_object(Bucket=harness.BUCKET, Key=key)["ETag"]
    with pytest.raises(s3.exceptions.ClientError):
        s3.get_object(Bucket=harness.BUCKET, Key=key, IfNoneMatch=etag)
    summary = counter.summary()
    assert (summary["requests"], summary["conditional"], summary["unconditional"]) == (2, 1, 1)
    assert summary["not_modified"] == 1


@pytest.mark.e2e
@pytest.mark.slow
def test_answer_workers_at_toy_size(moto) -> None:
    server, names = moto
    env = harness.answer_env(server.url)
    naive = harness.run_worker("answer_latency", {"mode": "naive", "names": names, "requests": 20}, env)
    product = harness.run_worker("answer_latency", {"mode": "product", "names": names, "requests": 50}, env)
    assert naive["count"] == 20 and product["count"] == 50
    assert 0 < product["p50_us"] <= product["p99_us"] <= product["max_us"]
    s3 = harness.run_worker("s3_requests", {"names": names}, env)
    assert s3["inside_ttl"]["unconditional"] == s3["inside_ttl"]["requests"] - s3["inside_ttl"]["conditional"]
    mem_config = {"names": names, "requests": 40, "unknown_every": 10, "sample_every": 20}
    mem = harness.run_worker("memory", mem_config, env)
    assert [s["request"] for s in mem["samples"]] == [20, 40]
    assert mem["unknown_names"] == 4 and mem["hwm_kb"] > 10_000


@pytest.mark.e2e
def test_worker_failure_is_reported(moto) -> None:
    server, names = moto
    with pytest.raises(RuntimeError, match="bench worker answer_latency failed"):
        harness.run_worker(
            "answer_latency",
            {"mode": "product", "names": ["NoSuchTemplate"], "requests": 1},
            harness.answer_env(server.url),
        )


@pytest.mark.e2e
def test_cold_start_children(moto) -> None:
    server, names = moto
    env = cold_start.child_env(server, names[0])
    for script in (cold_start.APP_SCRIPT, cold_start.BASELINE_SCRIPT):
        out = cold_start._start(script, env)
        assert out["ok"] and 0 < out["in_process"] < out["wall"]
    env["BENCH_MARK"] = "not in the answer"
    with pytest.raises(RuntimeError, match="wrong answer"):
        cold_start._start(cold_start.APP_SCRIPT, env)


@pytest.mark.e2e
def test_launcher_pass_against_simulator(moto) -> None:
    server, _ = moto
    env = launcher_throughput._env(server)
    sim = launcher_throughput.SimProcess(latency=0.05)
    try:
        launch = {
            "mode": "launch",
            "table": "bench-smoke",
            "jobs": 6,
            "cps": 50,
            "prefix": "smoke",
            "sim_url": sim.url,
        }
        out = harness.run_worker("launcher_throughput", launch, env)
        starts = [r for r in sim.requests() if r.get("status") == 201]
        sequential = {"mode": "sequential", "jobs": 2, "sim_url": sim.url}
        seq = harness.run_worker("launcher_throughput", sequential, env)
    finally:
        sim.stop()
    assert out["summary"]["placed"] == 6 and len(starts) == 6
    assert out["dynamodb"] >= 12
    assert out["dynamodb_purposes"]["jobs"] >= 12 and out["dynamodb_purposes"].get("lease", 0) >= 1
    assert out["events"]["entries"] == 6 and out["events"]["refused"] == 0
    assert out["dynamodb_purposes"]["events"] == 1  # the outbox drain's one Query: EventBridge took them all
    assert "6 events in 1 PutEvents, 0 refused" in launcher_throughput.outbox_row("t", out, 6).value
    assert seq["placed"] == 2 and seq["rate"] > 0


def test_measurements_are_registered_and_described() -> None:
    for key in ("conversation", "campaigns", "campaign_report"):
        assert callable(bench_main.MEASUREMENTS[key].run)
    for heading in ("Conversations and metrics", "Events outbox", "Campaigns", "Campaign report", "Pacing"):
        assert f"**{heading}**" in bench_main.METHOD


def test_dynamodb_purposes_name_the_products_requests() -> None:
    from chalicelib.calls import events as outcome_events
    from chalicelib.calls import pacing

    assert harness.LEASE_ID == pacing.LEASE_ID and harness.OUTBOX_INDEX == outcome_events.OUTBOX_INDEX
    purpose = harness.dynamodb_purpose
    assert purpose("GetItem", {"Key": {"call_id": {"S": pacing.LEASE_ID}}}) == "lease"
    assert purpose("Query", {"IndexName": "outbox-index"}) == "events"
    assert purpose("UpdateItem", {"UpdateExpression": "SET outbox.#id = :event"}) == "events"
    assert purpose("BatchGetItem", {}) == "gate"
    assert purpose("GetItem", {"Key": {"pk": {"S": "campaign#A"}}}) == "campaigns"
    assert (
        purpose("UpdateItem", {"Key": {"call_id": {"S": "j1"}}, "UpdateExpression": "SET #s = :s"}) == "jobs"
    )
    assert purpose("Query", {"IndexName": "status-due_at-index"}) == "jobs"


@pytest.mark.e2e
@pytest.mark.slow
def test_conversation_workers_at_toy_size(moto) -> None:
    server, names = moto
    conversation.seed(server.url)
    env = conversation.answer_env(server.url)
    counts = harness.run_worker("conversation", {"mode": "counts", "names": names}, env)
    assert counts["step_input_job"]["max"] == 2 and counts["step_input"]["max"] == 1
    assert (
        counts["v1"]["max"] == 0 and counts["step_no_input"]["max"] == 0 and counts["first_job"]["max"] == 1
    )
    lat = harness.run_worker("conversation", {"mode": "latency", "names": names, "rounds": 10}, env)
    lat.pop("log_lines")
    # metrics on: each v1 and v1-style answer wrote its EMF line (flushed, as Lambda's stdout is), to a file
    sink = lat.pop("emf_sink")
    assert sink["kind"] == "file" and sink["writes"] >= 2 * 10
    assert len(lat.pop("metrics_ratio_by_block")) == conversation.BLOCKS
    assert {k: v["count"] for k, v in lat.items()} == {
        "v1": 10,
        "bypass": 10,
        "metrics_off": 10,
        "floor": 10,
        "step": 2,
    }
    assert all(0 < v["p50_us"] <= v["p99_us"] <= v["max_us"] for v in lat.values())
    assert conversation._job_table_items(server.url)["result"] == "confirmed"


@pytest.mark.e2e
@pytest.mark.slow
def test_campaign_workers_at_toy_size(moto) -> None:
    server, _ = moto
    env = launcher_throughput._env(server)
    sim = launcher_throughput.SimProcess(latency=0.05)
    try:
        common = {"campaigns": 2, "per_campaign": 3, "cps": 50, "sim_url": sim.url}
        dial = harness.run_worker("campaigns", {"mode": "dial", "suffix": "smoke-d", **common}, env)
        paused = harness.run_worker(
            "campaigns", {"mode": "paused", "suffix": "smoke-p", "budget": 3.0, **common}, env, timeout=120
        )
    finally:
        sim.stop()
    assert dial["summary"]["placed"] == 6
    assert dial["dynamodb"]["purposes"]["gate"] >= 1 and dial["dynamodb"]["purposes"]["campaigns"] == 2
    assert paused["parked"] == 3 and paused["paused"] == ["Pause0"]
    assert paused["paused_items_read"] == 0 and paused["active_items_read"] == 3
    assert paused["paused_dialled"] == 0 and paused["summary"]["placed"] == 3


@pytest.mark.e2e
@pytest.mark.slow
def test_campaign_report_rows(monkeypatch) -> None:
    monkeypatch.setattr(campaign_report, "REPORT_JOBS_QUICK", 30)
    with local_aws.MotoServer() as server:
        rows, out = campaign_report.measure(server, [], quick=True)
    assert out["n"] == 30 and out["bare_read_s"] > 0 and out["report_s"] > 0
    assert [r.goal for r in rows] == ["≤ 1.5×", "", "≤ +5 MB (flat)"]


def calls_table(name: str):
    """A calls table (infra/resources.json's shape) in the current moto, as a boto3 Table."""
    ddb = boto3.resource("dynamodb", region_name=local_aws.REGION)
    local_aws.ensure_table(ddb.meta.client, name)
    return ddb.Table(name)


def query_pages(table, kwargs: dict) -> list:
    """Every page of a Query (items, Count, ScannedCount, LastEvaluatedKey), following the start keys."""
    out = []
    while True:
        page = table.query(**kwargs)
        out.append((page["Items"], page["Count"], page["ScannedCount"], page.get("LastEvaluatedKey")))
        if "LastEvaluatedKey" not in page:
            return out
        kwargs = {**kwargs, "ExclusiveStartKey": page["LastEvaluatedKey"]}


def test_fast_moto_answers_as_moto_does() -> None:
    """bench/fast_moto.py's query, reply and item paths give moto's own pages (in-process moto)."""
    import random
    from decimal import Decimal

    from boto3.dynamodb.conditions import Attr, Key
    from moto import mock_aws

    from bench import fast_moto

    fast_moto.install()
    random.seed(7)
    with mock_aws():
        table = calls_table("fast-moto-check")
        with table.batch_writer() as batch:
            for i in range(120):
                item = campaign_report.job(i, random.choice("AB"), 1000)
                item["due_at"] = Decimal(random.randint(0, 20))  # ties on the range key
                if i % 9 == 0:
                    del item["campaign"]
                batch.put_item(Item=item)

        def pages(**kwargs) -> list:
            return query_pages(table, kwargs)

        cases = []
        for index, key in (
            ("campaign-due_at-index", Key("campaign").eq("A")),
            ("status-due_at-index", Key("status").eq("pending")),
        ):
            for cond in (None, Key("due_at").lte(9), Key("due_at").gt(19), Key("due_at").between(3, 5)):
                for forward in (True, False):
                    for limit in (7, None):
                        kwargs = {
                            "IndexName": index,
                            "KeyConditionExpression": key if cond is None else key & cond,
                        }
                        kwargs |= {"ScanIndexForward": forward, **({"Limit": limit} if limit else {})}
                        cases.append(kwargs)
        cases.append({**cases[0], "FilterExpression": Attr("status").eq("completed")})
        try:
            for kwargs in cases:
                fast = pages(**kwargs)
                for part in fast_moto.ENABLED:
                    fast_moto.ENABLED[part] = False
                assert pages(**kwargs) == fast, kwargs
                for part in fast_moto.ENABLED:
                    fast_moto.ENABLED[part] = True
        finally:
            for part in fast_moto.ENABLED:
                fast_moto.ENABLED[part] = True


def test_fast_moto_pages_of_one_due_time_are_moto_s() -> None:
    """The campaigns bench's shape: thousands of one campaign's jobs sharing one due_at (parked), 500-item
    pages, with and without the status filter, both directions: the pages (items, counts and
    LastEvaluatedKey) are moto's own, and no item is on two pages."""
    from decimal import Decimal

    from boto3.dynamodb.conditions import Attr, Key
    from moto import mock_aws

    from bench import fast_moto
    from chalicelib.calls.campaign_store import PARKED_DUE_AT

    fast_moto.install()
    with mock_aws():
        table = calls_table("fast-moto-ties")
        with table.batch_writer() as batch:
            for i in range(1600):
                batch.put_item(
                    Item={
                        "call_id": f"P-{i:06d}",
                        "campaign": "P" if i % 8 else "Q",
                        "status": "pending" if i % 5 else "cancelled",
                        "due_at": Decimal(PARKED_DUE_AT if i % 4 else 1000 + i % 2),
                    }
                )

        def pages(**kwargs) -> list:
            return query_pages(table, kwargs)

        campaign = Key("campaign").eq("P")
        try:
            for cond in (
                campaign,
                campaign & Key("due_at").gte(PARKED_DUE_AT),
                campaign & Key("due_at").eq(1001),
            ):
                for status in (None, Attr("status").eq("pending")):
                    for forward in (True, False):
                        kwargs = {"IndexName": "campaign-due_at-index", "KeyConditionExpression": cond}
                        kwargs |= {"Limit": 500, "ScanIndexForward": forward}
                        if status is not None:
                            kwargs["FilterExpression"] = status
                        fast = pages(**kwargs)
                        ids = [item["call_id"] for page in fast for item in page[0]]
                        assert len(ids) == len(set(ids)), kwargs
                        fast_moto.ENABLED["query"] = False
                        assert pages(**kwargs) == fast, kwargs
                        fast_moto.ENABLED["query"] = True
        finally:
            fast_moto.ENABLED["query"] = True

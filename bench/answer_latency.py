"""Warm answer latency through the raw Lambda handler, beside the naive handler, both against moto server.

The product handler is `app.app(event, context)`: the Chalice app object is the Lambda entry point, so the
measurement includes Chalice's routing, the V3 signature check, template selection, rendering and XML
validation. Templates are warm in the cache (TTL 60 s, longer than the run needs between revalidations).
"""

from __future__ import annotations

import gc
import time

from bench import harness
from bench.harness import Result
from devtools.events import LambdaContext
from devtools.local_aws import MotoServer

EVENT_VARIANTS = 256


def _events(names: list[str], signed: bool) -> list[dict]:
    return [
        harness.api_event(harness.plivo_params(i, template=names[i % len(names)]), seq=i, signed=signed)
        for i in range(EVENT_VARIANTS)
    ]


def _check(response: dict, name: str) -> None:
    body = response.get("body") or ""
    if response.get("statusCode") != 200 or f"this is {name}." not in body:
        raise AssertionError(f"unexpected answer for {name}: {response.get('statusCode')} {body[:200]!r}")


def _time(handler, events: list[dict], names: list[str], count: int) -> tuple[list[float], list[float]]:
    """Wall and CPU (this thread) microseconds per request; CPU time is blind to other processes."""
    context = LambdaContext()
    for i, event in enumerate(events):  # warm-up: every variant once, checked
        _check(handler(dict(event), context), names[i % len(names)])
    gc.collect()
    _time.gc_runs = sum(s["collections"] for s in gc.get_stats())  # type: ignore[attr-defined]
    samples: list[float] = []
    cpu: list[float] = []
    bad = 0
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    for i in range(count):
        event = dict(events[i % EVENT_VARIANTS])
        cpu_start = cpu_clock()
        start = clock()
        response = handler(event, context)
        end = clock()
        cpu.append((cpu_clock() - cpu_start) / 1000)
        samples.append((end - start) / 1000)
        if response["statusCode"] != 200:
            bad += 1
    _time.gc_runs = sum(s["collections"] for s in gc.get_stats()) - _time.gc_runs  # type: ignore[attr-defined]
    if bad:
        raise AssertionError(f"{bad} of {count} answers were not 200")
    return samples, cpu


def worker(config: dict) -> dict:
    names = config["names"]
    if config["mode"] == "naive":
        from bench import naive

        samples, cpu = _time(naive.handler, _events(names, signed=False), names, config["requests"])
    else:
        import app

        events = _events(names, signed=config.get("signed", True))
        samples, cpu = _time(app.app, events, names, config["requests"])
    return {
        "gc_runs": _time.gc_runs,  # type: ignore[attr-defined]
        "cpu_p50_us": harness.percentile(cpu, 50),
        "cpu_p99_us": harness.percentile(cpu, 99),
        "count": len(samples),
        "p50_us": harness.percentile(samples, 50),
        "p99_us": harness.percentile(samples, 99),
        "mean_us": sum(samples) / len(samples),
        "max_us": max(samples),
    }


def run(moto: MotoServer, names: list[str], quick: bool = False) -> tuple[list[Result], dict]:
    requests = 2_000 if quick else 20_000
    naive_requests = 300 if quick else 3_000
    env = harness.answer_env(moto.url, ttl=600)
    naive = harness.run_worker(
        "answer_latency", {"mode": "naive", "names": names, "requests": naive_requests}, env
    )
    naive_row = Result(
        "answer",
        f"naive handler p50 / p99 (S3 GET + compile, n={naive['count']})",
        f"{naive['p50_us']:.0f} / {naive['p99_us']:.0f} µs",
        "",
        None,
    )
    try:
        product = harness.run_worker(
            "answer_latency", {"mode": "product", "names": names, "requests": requests, "signed": True}, env
        )
    except RuntimeError as exc:
        return [
            naive_row,
            harness.failed_row("answer", "warm p99, signed V3, raw handler", exc, "≤ 250 µs"),
            harness.failed_row("answer", "speed-up vs naive", exc, "≥ 20×"),
        ], {"naive": naive}
    speedup = naive["p50_us"] / product["p50_us"]
    speedup_p99 = naive["p99_us"] / product["p99_us"]
    results = [
        Result(
            "answer",
            f"warm p50, signed V3, raw handler (n={product['count']})",
            f"{product['p50_us']:.0f} µs",
            "",
            None,
        ),
        Result(
            "answer",
            f"warm p99, signed V3, raw handler (n={product['count']})",
            f"{product['p99_us']:.0f} µs",
            "≤ 250 µs",
            product["p99_us"] <= 250,
        ),
        Result(
            "answer",
            "warm CPU time p50 / p99 (thread time: excludes other processes)",
            f"{product['cpu_p50_us']:.0f} / {product['cpu_p99_us']:.0f} µs",
            "",
            None,
        ),
        Result(
            "answer",
            "cyclic GC runs per 1000 warm answers (garbage cycles per request)",
            f"{product['gc_runs'] * 1000 / product['count']:.1f}",
            "",
            None,
        ),
        naive_row,
        Result(
            "answer",
            "speed-up vs naive (p50 ratio; p99 ratio)",
            f"{speedup:.0f}× ({speedup_p99:.0f}×)",
            "≥ 20×",
            speedup >= 20,
        ),
    ]
    return results, {"product": product, "naive": naive}

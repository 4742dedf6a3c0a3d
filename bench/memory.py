"""Memory of a warm answer container: peak RSS (goal < 100 MB) and no growth between request 50 000 and
100 000, with 50 real templates and 10 000 distinct unknown `X-PH-Template` names in the mix.

Runs in its own process (RSS is per process): every 10th request names a template that does not exist,
each unknown name used once, so the cache's bounds are what keeps memory flat.
"""

from __future__ import annotations

import gc
import resource
import time
from pathlib import Path

from bench import harness
from bench.harness import Result
from devtools.events import LambdaContext
from devtools.local_aws import MotoServer


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def worker(config: dict) -> dict:
    import app
    from bench.s3_requests import S3Counter
    from chalicelib import resources

    names = config["names"]
    counter = S3Counter(resources.s3_client())
    total = config["requests"]
    every = config["unknown_every"]
    context = LambdaContext()
    samples: list[dict] = []
    fallbacks = 0
    started = time.monotonic()
    for i in range(1, total + 1):
        if i % every == 0:
            template = f"Unknown{i // every:05d}"
        else:
            template = names[i % len(names)]
        event = harness.api_event(harness.plivo_params(i, template=template), seq=i)
        response = app.app(event, context)
        if response["statusCode"] != 200:
            raise AssertionError(f"request {i} returned {response['statusCode']}")
        if template.startswith("Unknown") and "<Response" not in response["body"]:
            fallbacks += 1
        if i % config["sample_every"] == 0:
            gc.collect()
            samples.append(
                {
                    "request": i,
                    "rss_kb": _status_kb("VmRSS"),
                    "hwm_kb": _status_kb("VmHWM"),
                    "seconds": round(time.monotonic() - started, 1),
                }
            )
    return {
        "samples": samples,
        "hwm_kb": _status_kb("VmHWM"),
        "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "unknown_names": total // every,
        "s3": counter.summary(),
        "bad_unknown_answers": fallbacks,
        "seconds": time.monotonic() - started,
    }


def run(moto: MotoServer, names: list[str], quick: bool = False) -> tuple[list[Result], dict]:
    total = 6_000 if quick else 100_000
    cfg = {"names": names, "requests": total, "unknown_every": 10, "sample_every": total // 10}
    out = harness.run_worker("memory", cfg, harness.answer_env(moto.url, ttl=60), timeout=600)
    by_request = {s["request"]: s["rss_kb"] for s in out["samples"]}
    half, end = total // 2, total
    growth_mb = (by_request[end] - by_request[half]) / 1024
    peak_mb = out["hwm_kb"] / 1024
    s3 = out["s3"]
    results = [
        Result(
            "memory",
            f"peak RSS (VmHWM) after {total:,} answers",
            f"{peak_mb:.1f} MB",
            "< 100 MB",
            peak_mb < 100,
        ),
        Result(
            "memory",
            f"RSS growth, request {half:,} → {end:,} ({out['unknown_names']:,} unknown names)",
            f"{growth_mb:+.2f} MB",
            "≤ +1 MB (flat)",
            growth_mb <= 1.0,
        ),
        Result(
            "memory",
            f"S3 requests in those {total:,} answers (unknown names: {out['unknown_names']:,})",
            f"{s3['requests']:,} ({s3['conditional']:,} conditional)",
            "",
            None,
        ),
    ]
    return results, out

"""S3 requests per 1000 warm answers: inside the cache TTL (goal ≤ 2) and just after it (conditional only).

Counted on the product's own boto3 S3 client through botocore's event system (`before-send`, which also
sees retries, and `after-call` for the status), so nothing in the product is patched.
"""

from __future__ import annotations

import time

from bench import harness
from bench.harness import Result
from devtools.events import LambdaContext
from devtools.local_aws import MotoServer


class S3Counter:
    """Counts every HTTP request a boto3 client sends, and which of them are conditional GETs.

    Counters only, no per-request records: the memory measurement runs it for 100 000 answers.
    """

    def __init__(self, client) -> None:
        self.clear()
        client.meta.events.register("before-send.s3", self._before_send)
        client.meta.events.register("after-call.s3", self._after_call)

    def _before_send(self, request, **kwargs) -> None:
        self.requests += 1
        if any(h.lower() in ("if-none-match", "if-modified-since") for h in request.headers.keys()):
            self.conditional += 1
        self.methods.add(request.method)

    def _after_call(self, http_response, **kwargs) -> None:
        if http_response.status_code == 304:
            self.not_modified += 1

    def clear(self) -> None:
        self.requests = self.conditional = self.not_modified = 0
        self.methods: set[str] = set()

    def summary(self) -> dict:
        return {
            "requests": self.requests,
            "conditional": self.conditional,
            "unconditional": self.requests - self.conditional,
            "not_modified": self.not_modified,
            "methods": sorted(self.methods),
        }


def _answers(names: list[str], count: int, offset: int = 0) -> None:
    import app

    context = LambdaContext()
    events = [
        harness.api_event(harness.plivo_params(i, template=names[i % len(names)]), seq=i)
        for i in range(len(names))
    ]
    for i in range(count):
        response = app.app(dict(events[(i + offset) % len(events)]), context)
        if response["statusCode"] != 200:
            raise AssertionError(f"answer {i} returned {response['statusCode']}")


def worker(config: dict) -> dict:
    from chalicelib import resources

    names = config["names"]
    counter = S3Counter(resources.s3_client())
    _answers(names, len(names))  # warm: every template fetched and compiled once
    counter.clear()
    _answers(names, 1000)
    inside = counter.summary()
    after = None
    if config.get("wait_ttl"):
        time.sleep(config["ttl"] + 0.2)
        counter.clear()
        started = time.monotonic()
        _answers(names, 1000)
        after = counter.summary()
        after["seconds"] = time.monotonic() - started
    return {"inside_ttl": inside, "after_ttl": after}


def run(moto: MotoServer, names: list[str], quick: bool = False) -> tuple[list[Result], dict]:
    inside = harness.run_worker("s3_requests", {"names": names}, harness.answer_env(moto.url, ttl=60))
    ttl = 3.0
    after = harness.run_worker(
        "s3_requests", {"names": names, "wait_ttl": True, "ttl": ttl}, harness.answer_env(moto.url, ttl=ttl)
    )
    a = after["after_ttl"]
    n_in = inside["inside_ttl"]["requests"]
    objects = len(names) + 1  # every template plus routes.json
    results = [
        Result(
            "S3",
            f"requests / 1000 warm answers inside TTL ({len(names)} templates)",
            str(n_in),
            "≤ 2",
            n_in <= 2,
        ),
        Result(
            "S3",
            f"requests / 1000 answers right after TTL ({ttl:g} s) expired",
            f"{a['requests']} ({a['conditional']} conditional, {a['not_modified']} × 304)",
            f"conditional only, ≤ {objects}",
            a["unconditional"] == 0 and a["requests"] <= objects and a["requests"] > 0,
        ),
    ]
    return results, {"inside": inside, "after": after}

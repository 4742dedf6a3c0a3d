"""`python -m bench.profile_answer [N]`: cProfile of N warm answers through the raw handler (moto server,
50 templates, signed events), plus what the cyclic GC had to collect. For finding what makes the
answer path slow; not part of `make bench`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from bench import harness
from devtools.local_aws import MotoServer

CHILD = """
import collections, cProfile, gc, json, os, pstats, sys
from bench import answer_latency
from devtools.events import LambdaContext
import app
names = json.loads(os.environ["BENCH_NAMES"])
count = int(os.environ["BENCH_COUNT"])
events = answer_latency._events(names, signed=True)
context = LambdaContext()
for event in events:
    app.app(dict(event), context)
gc.collect()
before = sum(s["collections"] for s in gc.get_stats())
profile = cProfile.Profile()
profile.enable()
for i in range(count):
    app.app(dict(events[i % len(events)]), context)
profile.disable()
print(f"cyclic GC runs: {sum(s['collections'] for s in gc.get_stats()) - before} in {count} answers")
gc.set_debug(gc.DEBUG_SAVEALL)
for i in range(100):
    app.app(dict(events[i % len(events)]), context)
gc.collect()
kinds = collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage)
print(f"objects in garbage cycles per answer: {len(gc.garbage) / 100:.1f}; most common:")
for kind, n in kinds.most_common(8):
    print(f"  {n / 100:6.2f}  {kind}")
gc.set_debug(0)
gc.garbage.clear()
stats = pstats.Stats(profile, stream=sys.stdout)
stats.sort_stats("cumulative").print_stats(30)
stats.sort_stats("tottime").print_stats(15)
"""


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    with MotoServer() as moto:
        names = harness.seed_templates(moto.url, 50)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PLIVO_", "TEMPLATE_"))}
        env.update(harness.answer_env(moto.url, ttl=600))
        env.update(
            {"BENCH_NAMES": json.dumps(names), "BENCH_COUNT": str(count), "PYTHONPATH": str(harness.ROOT)}
        )
        subprocess.run(
            [harness.PYTHON, "-c", CHILD], env=env, cwd=harness.ROOT, stderr=subprocess.DEVNULL, check=True
        )


if __name__ == "__main__":
    main()

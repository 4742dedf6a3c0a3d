"""Entry point of a bench worker process: `python -m bench.worker MODULE` with a JSON config on stdin.

Prints one JSON line (the module's `worker(config)` result) on stdout; logs stay on stderr.
"""

from __future__ import annotations

import importlib
import json
import sys


def main() -> None:
    module = importlib.import_module(f"bench.{sys.argv[1]}")
    config = json.loads(sys.stdin.read() or "{}")
    result = module.worker(config)
    sys.stdout.write(json.dumps(result, default=str) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

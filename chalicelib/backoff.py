"""How long a job waits before its next try: retry delays after a failed call, jittered backoff after a
throttled or failed request (so many throttled jobs do not all come back in the same second)."""

from __future__ import annotations

import random
from collections.abc import Sequence

TRANSIENT_BASE = 30.0
TRANSIENT_CAP = 900.0
# The 10th 429/5xx/refused in a row fails the job: by then it has backed off for about an hour (at most
# 75 min), long enough for a Plivo incident or a throttled destination to have cleared.
MAX_TRANSIENT_ERRORS = 10


def retry_delay(delays: Sequence[int], attempts: int) -> int:
    """Seconds to wait before attempt `attempts + 1`: RETRY_DELAYS[attempts-1], the last one repeating."""
    if not delays:
        return 0
    index = min(max(attempts, 1) - 1, len(delays) - 1)
    return int(delays[index])


def transient_delay(errors: int, rand: random.Random | None = None,
                    base: float = TRANSIENT_BASE, cap: float = TRANSIENT_CAP) -> float:
    """Backoff after the `errors`-th 429/5xx/refused in a row: exponential, capped, "equal jitter"."""
    exp = min(cap, base * (2 ** max(errors - 1, 0)))
    r = (rand or random).random()
    return exp / 2 + r * exp / 2

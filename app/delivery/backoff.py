"""The one retry policy of the worker: exponential backoff with full jitter."""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_delay(
    attempt: int,
    *,
    base: float = 0.05,
    cap: float = 10.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry ``attempt`` (1 = first retry): exponential, full jitter.

    Full jitter (uniform over ``[0, min(cap, base * 2**(attempt-1))]``) spreads the
    retries of many workers hit by the same throttling or outage instead of having
    them return in lock-step; the cap bounds how long a recovered table waits for us.
    """
    if attempt < 1:
        return 0.0
    # min() on the exponent first: 2**attempt for a day-long outage would be huge.
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 62))
    return ceiling * rand()

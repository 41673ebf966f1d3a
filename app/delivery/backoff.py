"""The one retry policy of the worker: exponential backoff with full jitter, and the one loop
that applies it.

:func:`backoff_delay` is the policy; :class:`Retry` runs an operation under it: every
``Exception`` is retried (cancellation, a ``BaseException``, never is: a stopping worker
stops at once, mid-wait included), forever or until a stop event is set, with one log line
per retry that counts the failures of the current streak and how long it has lasted. The
line names the exception's class only, never its message (which can carry data or
credentials); a caller that needs the traceback asks for it, and gets it PAN-redacted.

A long-running operation (a follower, a consumer loop) calls :meth:`Retry.recovered` when it
makes progress, so that its next outage starts a new streak: a short first wait, and "failing
for" counted from that outage, not from the worker's start.

Why not tenacity (weighed for this module): its asyncio loop, full-jitter wait
(``wait_random_exponential``) and hooks fit, but its attempt count cannot be reset on progress
(jd/tenacity#225), which the long-running loops need, and a fresh ``AsyncRetrying`` per call
(its iteration state lives on the object) costs ~22 µs on the success path against ~1 µs for
a :class:`Retry`, paid by every dead letter of a flood. Around it we would have kept our own
counter and a fast path, leaving it a ``while``/``try``/``sleep``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import traceback as tb
from collections.abc import Awaitable, Callable
from typing import TypeVar

from app.detection.pan import redact_text_cut

T = TypeVar("T")

_log = logging.getLogger(__name__)


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


class Retry:
    """Runs operations under the policy, logging each retry as ``what`` (a phrase such as
    ``"rules follower failed"``) to ``log`` at ``level``.

    ``on_failure`` sees every failure before its wait (counters, health); ``stop``, once
    set, ends the retrying: the failure at hand (or the one the wait followed) is raised.
    ``sleep`` replaces ``asyncio.sleep`` (looked up at each wait) in tests; it is not used
    while a ``stop`` event is given, whose wait it would not end.
    """

    def __init__(
        self,
        what: str,
        *,
        base: float,
        cap: float,
        log: logging.Logger = _log,
        level: int = logging.WARNING,
        traceback: bool = False,
        on_failure: Callable[[Exception], None] | None = None,
        stop: asyncio.Event | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.what = what
        self.base, self.cap = base, cap
        self._log, self._level, self._traceback = log, level, traceback
        self._on_failure, self._stop, self._sleep, self._rand = on_failure, stop, sleep, rand
        self.failures = 0  # of the current streak
        self.failing_since: float | None = None  # monotonic time of its first failure

    def recovered(self) -> None:
        """Progress: the next failure starts a new streak (also done by a success)."""
        self.failures, self.failing_since = 0, None

    async def run(self, operation: Callable[[], Awaitable[T]]) -> T:
        """``await operation()`` until it returns; retried on every ``Exception``."""
        while True:
            try:
                result = await operation()
            except Exception as exc:
                if not await self._wait_after(exc):
                    raise
            else:
                self.recovered()
                return result

    async def _wait_after(self, exc: Exception) -> bool:
        """Count, report and wait out a failure; False if told to stop instead."""
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
        self.failures += 1
        if self._on_failure is not None:
            self._on_failure(exc)
        if self._stop is not None and self._stop.is_set():
            return False
        delay = backoff_delay(self.failures, base=self.base, cap=self.cap, rand=self._rand)
        trace = ""
        if self._traceback:
            # The traceback, redacted and cut as app.worker.failures does for internal errors.
            text = "".join(tb.format_exception(exc, limit=8))
            trace = "\n" + redact_text_cut(text, slice(-4000, None))
        self._log.log(
            self._level,
            "%s (failure %d in a row, failing for %.1f s: %s); retrying in %.2f s%s",
            self.what,
            self.failures,
            now - self.failing_since,
            type(exc).__name__,
            delay,
            trace,
        )
        if self._stop is None:
            await (self._sleep or asyncio.sleep)(delay)
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)
        return not self._stop.is_set()

"""Slack retries within the invocation's time: a shared :class:`RetryBudget` and
slack_sdk's retry handlers (429 with Retry-After, 5xx, connection errors), subclassed
only to ask the budget before each sleep.

A Retry-After of 30 s in a Lambda with 10 s left must fail the record now (the event
source mapping redelivers it) rather than be killed mid-sleep.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState


class RetryBudget:
    """Wall-clock budget shared by every retry in one Lambda invocation."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._deadline: float | None = None

    def start(self, seconds: float | None) -> None:
        """Allow ``seconds`` from now (None: no limit other than the retry counts)."""
        self._deadline = None if seconds is None else self._clock() + max(0.0, seconds)

    def remaining(self) -> float:
        if self._deadline is None:
            return float("inf")
        return max(0.0, self._deadline - self._clock())

    def allows(self, wait_s: float, then_s: float) -> bool:
        """Whether waiting ``wait_s`` and then spending up to ``then_s`` fits in the budget."""
        return wait_s + then_s <= self.remaining()


def parse_retry_after(value: str | None, *, now: float | None = None) -> float:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date).

    Slack sends whole seconds, but a missing or unreadable value still means "slow
    down": 1 s, slack_sdk's own default.
    """
    if value is None:
        return 1.0
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return 1.0
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return 1.0
    return max(0.0, seconds)


def _header(response: HttpResponse | None, name: str) -> str | None:
    if response is None:
        return None
    for key, values in response.headers.items():
        if key.lower() == name:
            return values[0] if values else None
    return None


class _SleepsWhatItBudgeted(RetryHandler):
    """Shared by the three handlers: ``_can_retry`` decides (and budgets) ``_sleep_s``;
    the next attempt then sleeps exactly that. slack_sdk's own 429 handler sleeps
    int(Retry-After) + up to 1 s and fails on a fractional or HTTP-date value."""

    _budget: RetryBudget
    _attempt_timeout_s: float
    _sleep_s: float

    def _use_budget(self, budget: RetryBudget, attempt_timeout_s: float) -> None:
        self._budget = budget
        self._attempt_timeout_s = attempt_timeout_s
        self._sleep_s = 0.0

    def _fits(self, sleep_s: float) -> bool:
        self._sleep_s = sleep_s
        return self._budget.allows(sleep_s, self._attempt_timeout_s)

    def prepare_for_next_attempt(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        state.next_attempt_requested = True
        time.sleep(self._sleep_s)
        state.increment_current_attempt()


class BudgetedRateLimitRetryHandler(_SleepsWhatItBudgeted, RateLimitErrorRetryHandler):
    """slack_sdk's 429 handler, sleeping exactly Retry-After (+ small jitter) if it fits."""

    def __init__(
        self, budget: RetryBudget, attempt_timeout_s: float, max_retry_count: int, jitter_s: float
    ) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self._use_budget(budget, attempt_timeout_s)
        self._jitter_s = jitter_s

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if not super()._can_retry(state=state, request=request, response=response, error=error):
            return False
        retry_after = parse_retry_after(_header(response, "retry-after"))
        return self._fits(retry_after + self._jitter_s * random.random())


class BudgetedServerErrorRetryHandler(_SleepsWhatItBudgeted, ServerErrorRetryHandler):
    """slack_sdk's 5xx handler with exponential backoff, if the backoff fits the budget."""

    # The built-in one retries only 500 and 503; Slack's edge also answers 502 and 504.
    RETRYABLE = frozenset({500, 502, 503, 504})

    def __init__(self, budget: RetryBudget, attempt_timeout_s: float, max_retry_count: int) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self._use_budget(budget, attempt_timeout_s)

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or response.status_code not in self.RETRYABLE:
            return False
        return self._fits(self.interval_calculator.calculate_sleep_duration(state.current_attempt))


class BudgetedConnectionErrorRetryHandler(_SleepsWhatItBudgeted, ConnectionErrorRetryHandler):
    """slack_sdk's connection-error handler (refused, reset), if the backoff fits the budget.

    Like the built-in one it does not retry a read timeout: Slack may have posted the
    message already, and a duplicate is worse than a redelivery decided upstream.
    """

    def __init__(self, budget: RetryBudget, attempt_timeout_s: float, max_retry_count: int) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self._use_budget(budget, attempt_timeout_s)

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if not super()._can_retry(state=state, request=request, response=response, error=error):
            return False
        return self._fits(self.interval_calculator.calculate_sleep_duration(state.current_attempt))


def retry_handlers(
    budget: RetryBudget, attempt_timeout_s: float, max_retries: int, jitter_s: float = 0.25
) -> list[RetryHandler]:
    """A fresh set of handlers (they remember the sleep they chose, so one set per send)."""
    return [
        BudgetedRateLimitRetryHandler(budget, attempt_timeout_s, max_retries, jitter_s),
        BudgetedServerErrorRetryHandler(budget, attempt_timeout_s, max_retries),
        BudgetedConnectionErrorRetryHandler(budget, attempt_timeout_s, max_retries),
    ]

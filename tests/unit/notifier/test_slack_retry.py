"""lambdas/notifier/adapters/slack_retry.py: Slack retries within the time budget."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from lambdas.notifier.adapters.slack_retry import (
    BudgetedConnectionErrorRetryHandler,
    BudgetedRateLimitRetryHandler,
    BudgetedServerErrorRetryHandler,
    RetryBudget,
    parse_retry_after,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _response(status: int, headers: dict[str, str] | None = None) -> HttpResponse:
    return HttpResponse(
        status_code=status, headers={k: [v] for k, v in (headers or {}).items()}, data=b""
    )


_REQUEST = HttpRequest(method="POST", url="http://127.0.0.1/x", headers={})


def test_retry_after_parsing() -> None:
    assert parse_retry_after("1") == 1.0
    assert parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after(None) == 1.0
    assert parse_retry_after("soon") == 1.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("nan") == 1.0
    when = datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC)
    start = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
    assert parse_retry_after(format_datetime(when, usegmt=True), now=start) == 30.0


def test_rate_limit_retry_only_when_retry_after_fits_the_budget() -> None:
    clock = FakeClock()
    budget = RetryBudget(clock)
    budget.start(10.0)
    handler = BudgetedRateLimitRetryHandler(budget, 2, max_retry_count=3, jitter_s=0.0)
    state = RetryState()
    ok = _response(429, {"Retry-After": "5"})
    assert handler.can_retry(state=state, request=_REQUEST, response=ok)
    too_long = _response(429, {"Retry-After": "30"})
    assert not handler.can_retry(state=state, request=_REQUEST, response=too_long)
    clock.now += 4.0  # 6 s left: 5 s wait + a 2 s attempt no longer fit
    assert not handler.can_retry(state=state, request=_REQUEST, response=ok)
    assert not handler.can_retry(state=state, request=_REQUEST, response=_response(500))


def test_retry_counts_still_apply_without_a_deadline() -> None:
    budget = RetryBudget(FakeClock())
    budget.start(None)
    handler = BudgetedServerErrorRetryHandler(budget, 2, max_retry_count=1)
    state = RetryState()
    assert handler.can_retry(state=state, request=_REQUEST, response=_response(502))
    assert not handler.can_retry(state=state, request=_REQUEST, response=_response(400))
    state.increment_current_attempt()
    assert not handler.can_retry(state=state, request=_REQUEST, response=_response(503))


def test_server_and_connection_retries_stop_when_the_budget_is_spent() -> None:
    clock = FakeClock()
    budget = RetryBudget(clock)
    budget.start(4.0)
    server = BudgetedServerErrorRetryHandler(budget, 2, max_retry_count=5)
    conn = BudgetedConnectionErrorRetryHandler(budget, 2, max_retry_count=5)
    state = RetryState()
    refused = ConnectionResetError("reset")
    # First backoff: 0.5 s + up to 1 s jitter, then a 2 s attempt: fits in 4 s ...
    assert server.can_retry(state=state, request=_REQUEST, response=_response(500))
    assert conn.can_retry(state=state, request=_REQUEST, error=refused)
    clock.now += 2.5  # ... with 1.5 s left nothing does.
    assert not server.can_retry(state=state, request=_REQUEST, response=_response(500))
    assert not conn.can_retry(state=state, request=_REQUEST, error=refused)

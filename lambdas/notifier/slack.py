"""Posting to Slack with slack_sdk: incoming webhook or ``chat.postMessage``.

Retries use slack_sdk's own retry handlers (429 with Retry-After, 5xx, connection
errors), subclassed only to ask a shared :class:`RetryBudget` before each sleep: a
Retry-After of 30 s in a Lambda with 10 s left must fail the record now (the event
source mapping redelivers it) rather than be killed mid-sleep.

Secrets (the webhook URL, the bot token) never reach a log line: slack_sdk logs the
full request URL on connection retries, so it gets a logger of its own that drops
INFO and scrubs whatever it still emits, and every exception leaving this module
carries a scrubbed message and no chained cause.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import random
import re
import time
from collections.abc import Callable, Iterable
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.webhook import WebhookClient

REDACTED = "[redacted]"
# Defence in depth for secrets this process was never told about (e.g. a URL that
# arrived in a response body): Slack webhook paths and Slack tokens have fixed shapes.
_SECRET_PATTERNS = (
    re.compile(r"https?://hooks\.slack(?:-gov)?\.com/\S+"),
    re.compile(r"/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]+"),
    re.compile(r"xox[abeoprs]-[A-Za-z0-9-]+"),
)
# Shorter strings would redact ordinary words if someone configured a silly secret.
_MIN_SECRET_LEN = 8


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (and anything shaped like a Slack secret) replaced."""
    for secret in sorted((s for s in secrets if len(s) >= _MIN_SECRET_LEN), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


class Redactor:
    """The secrets this process has handled, for scrubbing log lines and error messages."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()

    def add(self, secret: str) -> None:
        if len(secret) < _MIN_SECRET_LEN:
            return
        self._secrets.add(secret)
        # A webhook URL's secret is its path; an HTTP error may quote only that part.
        path = urlsplit(secret).path if "://" in secret else ""
        if len(path) >= _MIN_SECRET_LEN and path.count("/") >= 2:
            self._secrets.add(path)

    def __call__(self, text: str) -> str:
        return redact(text, self._secrets)


REDACTOR = Redactor()


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = REDACTOR(record.getMessage())
        record.args = None
        return True


def _sdk_logger() -> logging.Logger:
    logger = logging.getLogger("lambdas.notifier.slack_sdk")
    # slack_sdk tests ``logger.level <= DEBUG`` to decide whether to log request URLs
    # and headers (with the bearer token); an explicit WARNING makes that test false.
    logger.setLevel(logging.WARNING)
    if not any(isinstance(f, _RedactingFilter) for f in logger.filters):
        logger.addFilter(_RedactingFilter())
    return logger


class SlackSendError(Exception):
    """Posting failed; the message is safe to log (no URL, no token)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


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


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SlackSender(Protocol):
    def send(self, *, text: str, blocks: list[dict[str, Any]]) -> dict[str, Any]:
        """Post one message; return a small JSON-able receipt (stored by idempotency)."""
        ...


class _BaseSender:
    def __init__(
        self,
        budget: RetryBudget,
        timeout_s: float,
        max_retries: int,
        jitter_s: float = 0.25,
    ) -> None:
        self._budget = budget
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        self._jitter_s = jitter_s

    def _attempt_timeout(self) -> int:
        # urllib's timeout is per socket operation; keeping it under the budget keeps
        # one slow attempt from eating the whole invocation.
        return max(1, int(min(self._timeout_s, self._budget.remaining())))

    def _handlers(self, attempt_timeout: int) -> list[RetryHandler]:
        return retry_handlers(self._budget, attempt_timeout, self._max_retries, self._jitter_s)


class WebhookSender(_BaseSender):
    """Incoming webhook. The URL is read per send so a rotated secret takes effect."""

    def __init__(
        self,
        *,
        url: Callable[[], str],
        budget: RetryBudget,
        timeout_s: float = 5.0,
        max_retries: int = 2,
        jitter_s: float = 0.25,
    ) -> None:
        super().__init__(budget, timeout_s, max_retries, jitter_s)
        self._url = url

    def send(self, *, text: str, blocks: list[dict[str, Any]]) -> dict[str, Any]:
        try:
            url = self._url()
            REDACTOR.add(url)
            timeout = self._attempt_timeout()
            client = WebhookClient(
                url=url,
                timeout=timeout,
                logger=_sdk_logger(),
                retry_handlers=self._handlers(timeout),
            )
            if _is_loopback(url):
                client.proxy = None  # a local stand-in for Slack is never behind the proxy
            response = client.send(text=text, blocks=blocks, unfurl_links=False)
        except Exception as exc:
            raise SlackSendError(
                f"webhook request failed: {type(exc).__name__}: {REDACTOR(str(exc))}"
            ) from None
        if response.status_code != 200:
            body = REDACTOR(str(response.body or "")[:200])
            raise SlackSendError(
                f"webhook answered HTTP {response.status_code}: {body}", status=response.status_code
            )
        return {"sink": "slack-webhook", "status": response.status_code}


class ChatPostMessageSender(_BaseSender):
    """``chat.postMessage`` with a bot token; ``base_url`` may point at a local server."""

    def __init__(
        self,
        *,
        token: Callable[[], str],
        channel: str,
        budget: RetryBudget,
        base_url: str | None = None,
        timeout_s: float = 5.0,
        max_retries: int = 2,
        jitter_s: float = 0.25,
    ) -> None:
        super().__init__(budget, timeout_s, max_retries, jitter_s)
        self._token = token
        self._channel = channel
        self._base_url = base_url

    def send(self, *, text: str, blocks: list[dict[str, Any]]) -> dict[str, Any]:
        try:
            token = self._token()
            REDACTOR.add(token)
            timeout = self._attempt_timeout()
            kwargs: dict[str, Any] = {}
            if self._base_url:
                kwargs["base_url"] = self._base_url.rstrip("/") + "/"
            client = WebClient(
                token=token,
                timeout=timeout,
                logger=_sdk_logger(),
                retry_handlers=self._handlers(timeout),
                **kwargs,
            )
            if _is_loopback(client.base_url):
                client.proxy = None
            response = client.chat_postMessage(
                channel=self._channel, text=text, blocks=blocks, unfurl_links=False
            )
        except SlackApiError as exc:
            status = exc.response.status_code
            error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
            raise SlackSendError(
                f"chat.postMessage answered HTTP {status}: {REDACTOR(str(error or 'not ok'))}",
                status=status,
            ) from None
        except Exception as exc:
            raise SlackSendError(
                f"chat.postMessage request failed: {type(exc).__name__}: {REDACTOR(str(exc))}"
            ) from None
        return {
            "sink": "slack-chat",
            "channel": str(response.get("channel", self._channel)),
            "ts": str(response.get("ts", "")),
        }

"""Posting to Slack with slack_sdk: incoming webhook or ``chat.postMessage``.

Retries are slack_sdk's, bounded by the invocation's time (:mod:`.slack_retry`).
Secrets (the webhook URL, the bot token) never reach a log line: slack_sdk logs the
full request URL on connection retries, so it gets a logger of its own that drops
INFO and scrubs whatever it still emits (:mod:`.redaction`), and every exception
leaving this module carries a scrubbed message and no chained cause.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.webhook import WebhookClient

from lambdas.notifier.adapters.redaction import REDACTOR, RedactingFilter
from lambdas.notifier.adapters.secrets import credential
from lambdas.notifier.adapters.slack_retry import RetryBudget, retry_handlers
from lambdas.notifier.models.env import NotifierConfig


def _sdk_logger() -> logging.Logger:
    logger = logging.getLogger("lambdas.notifier.slack_sdk")
    # slack_sdk tests ``logger.level <= DEBUG`` to decide whether to log request URLs
    # and headers (with the bearer token); an explicit WARNING makes that test false.
    logger.setLevel(logging.WARNING)
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())
    return logger


class SlackSendError(Exception):
    """Posting failed; the message is safe to log (no URL, no token)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


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

    def _client(self) -> WebClient:
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
        return client

    def _call(self, method: str, call: Callable[[WebClient], Any]) -> Any:
        """``call`` on a fresh client; every failure as a log-safe :class:`SlackSendError`."""
        try:
            return call(self._client())
        except SlackApiError as exc:
            status = exc.response.status_code
            error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
            raise SlackSendError(
                f"{method} answered HTTP {status}: {REDACTOR(str(error or 'not ok'))}",
                status=status,
            ) from None
        except Exception as exc:
            raise SlackSendError(
                f"{method} request failed: {type(exc).__name__}: {REDACTOR(str(exc))}"
            ) from None

    def send(self, *, text: str, blocks: list[dict[str, Any]]) -> dict[str, Any]:
        response = self._call(
            "chat.postMessage",
            lambda client: client.chat_postMessage(
                channel=self._channel, text=text, blocks=blocks, unfurl_links=False
            ),
        )
        return {
            "sink": "slack-chat",
            "channel": str(response.get("channel", self._channel)),
            "ts": str(response.get("ts", "")),
        }

    def update(self, *, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]) -> None:
        """``chat.update`` of a message this bot posted (a case's, as its alerts join)."""
        self._call(
            "chat.update",
            lambda client: client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks),
        )


def slack_sender(
    config: NotifierConfig, budget: RetryBudget, secrets_client: Callable[[], Any]
) -> SlackSender | None:
    """The sender ``config`` asks for, or None without Slack.

    ``secrets_client`` is called only if a credential is given by Secrets Manager ARN.
    """
    if config.slack_mode == "webhook":
        return WebhookSender(
            url=credential(
                config.webhook_url,
                config.webhook_secret_arn,
                ("webhook_url", "url"),
                secrets_client=secrets_client,
            ),
            budget=budget,
            timeout_s=config.slack_timeout_s,
            max_retries=config.slack_max_retries,
        )
    if config.slack_mode == "chat":
        assert config.channel is not None
        return ChatPostMessageSender(
            token=credential(
                config.bot_token,
                config.bot_token_secret_arn,
                ("bot_token", "token"),
                secrets_client=secrets_client,
            ),
            channel=config.channel,
            budget=budget,
            base_url=config.slack_api_base_url,
            timeout_s=config.slack_timeout_s,
            max_retries=config.slack_max_retries,
        )
    return None

"""The notifier's environment model: every variable it reads, declared once in ``VARIABLES``.

Parsed once per container; a bad value raises :class:`ConfigError` naming the
variable (never its value: some of them are secrets).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# Lambda stream records are retained 24 h; an idempotency record must outlive every
# possible redelivery of the alert it guards, with room for a slow retry cycle.
DEFAULT_IDEMPOTENCY_TTL_S = 48 * 3600


class ConfigError(ValueError):
    """An environment variable is missing, contradictory or unusable."""


@dataclass(frozen=True)
class NotifierConfig:
    idempotency_table: str
    webhook_url: str | None = None
    webhook_secret_arn: str | None = None
    bot_token: str | None = None
    bot_token_secret_arn: str | None = None
    channel: str | None = None
    slack_api_base_url: str | None = None
    sns_topic_arn: str | None = None
    inspect_base_url: str | None = None
    cases_table: str | None = None
    dynamodb_endpoint: str | None = None
    region: str = "us-east-1"
    slack_timeout_s: float = 5.0
    slack_max_retries: int = 2
    idempotency_ttl_s: int = DEFAULT_IDEMPOTENCY_TTL_S
    # Kept back from each invocation for the SNS publish and the idempotency writes
    # that follow the Slack post.
    reserve_s: float = 2.0

    def __repr__(self) -> str:
        # The dataclass repr would print the webhook URL and the bot token.
        return (
            f"NotifierConfig(slack={self.slack_mode!r}, sns={bool(self.sns_topic_arn)}, "
            f"idempotency_table={self.idempotency_table!r})"
        )

    __str__ = __repr__

    @property
    def slack_mode(self) -> str | None:
        """``"webhook"``, ``"chat"`` or None when Slack is not configured."""
        if self.webhook_url or self.webhook_secret_arn:
            return "webhook"
        if self.bot_token or self.bot_token_secret_arn:
            return "chat"
        return None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NotifierConfig:
        """Read ``VARIABLES`` from ``env`` (default: the process environment) and check
        that together they describe one way to notify."""
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        for variable in VARIABLES:
            found = variable.lookup(source)
            if found is None:
                if variable.required:
                    raise ConfigError(f"{variable.name} is required")
                continue
            name, raw = found
            try:
                values[variable.attr] = variable.parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{name} {exc}") from None
        config = cls(**values)
        _check_combination(config)
        return config


# --- parsers: each raises ValueError with a reason that follows the variable's name ---


def _text(raw: str) -> str:
    return raw


def _http_url(raw: str) -> str:
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", raw):
        raise ValueError("must be an http(s):// URL")
    return raw


def _number(minimum: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError("is not a number") from None
        if not minimum <= value < float("inf"):
            raise ValueError(f"must be a finite number >= {minimum:g}")
        return value

    return parse


def _whole_number(minimum: int) -> Callable[[str], int]:
    number = _number(minimum)
    # Read as a number and truncated, so "2.0" (what a templating tool may write) works.
    return lambda raw: int(number(raw))


@dataclass(frozen=True)
class Variable:
    """One environment variable: the :class:`NotifierConfig` field it sets, how it is
    parsed, and what it is for."""

    name: str
    attr: str
    parse: Callable[[str], object]
    description: str
    required: bool = False
    # Read when ``name`` is unset or blank.
    fallback: str | None = None

    def lookup(self, env: Mapping[str, str]) -> tuple[str, str] | None:
        """``(variable that was set, its stripped value)``, or None if neither is set."""
        names = (self.name,) if self.fallback is None else (self.name, self.fallback)
        for name in names:
            value = env.get(name, "").strip()
            if value:
                return name, value
        return None


VARIABLES: tuple[Variable, ...] = (
    # Required: without it "at most one post per alert" cannot hold across containers.
    Variable(
        "IDEMPOTENCY_TABLE",
        "idempotency_table",
        _text,
        "DynamoDB table of the idempotency records, one per (sink, alert_id)",
        required=True,
    ),
    Variable(
        "SLACK_WEBHOOK_URL", "webhook_url", _http_url, "Slack incoming webhook URL (a secret)"
    ),
    Variable(
        "SLACK_WEBHOOK_SECRET_ARN",
        "webhook_secret_arn",
        _text,
        "Secrets Manager secret holding the webhook URL (plain, or JSON webhook_url/url)",
    ),
    Variable("SLACK_BOT_TOKEN", "bot_token", _text, "bot token for chat.postMessage (a secret)"),
    Variable(
        "SLACK_BOT_TOKEN_SECRET_ARN",
        "bot_token_secret_arn",
        _text,
        "Secrets Manager secret holding the bot token (plain, or JSON bot_token/token)",
    ),
    Variable("SLACK_CHANNEL", "channel", _text, "channel to post to with a bot token"),
    Variable(
        "SLACK_API_BASE_URL",
        "slack_api_base_url",
        _http_url,
        "Slack Web API base URL (a local stand-in; default Slack's)",
    ),
    Variable("SNS_TOPIC_ARN", "sns_topic_arn", _text, "SNS topic receiving each alert as JSON"),
    Variable(
        "FRAUD_INSPECT_BASE_URL",
        "inspect_base_url",
        _http_url,
        "dashboard base URL: card alerts get an 'Inspect card' button",
    ),
    Variable(
        "CASES_TABLE",
        "cases_table",
        _text,
        "cases table: with a bot token, a later alert of an open case updates its message",
    ),
    Variable(
        "FRAUD_DYNAMODB_ENDPOINT",
        "dynamodb_endpoint",
        _http_url,
        "DynamoDB endpoint for the idempotency table (DynamoDB Local, moto)",
    ),
    Variable(
        "AWS_REGION",
        "region",
        _text,
        "AWS region (default us-east-1)",
        fallback="AWS_DEFAULT_REGION",
    ),
    Variable(
        "SLACK_TIMEOUT_SECONDS", "slack_timeout_s", _number(1.0), "timeout of one Slack request"
    ),
    Variable(
        "SLACK_MAX_RETRIES",
        "slack_max_retries",
        _whole_number(0),
        "retries of a Slack post (429, 5xx, connection errors) within the invocation's time",
    ),
    Variable(
        "IDEMPOTENCY_TTL_SECONDS",
        "idempotency_ttl_s",
        _whole_number(60),
        "lifetime of an idempotency record (must outlive every redelivery)",
    ),
)


def _check_combination(config: NotifierConfig) -> None:
    """Exactly one Slack sink (or none), complete, and at least one sink in all."""
    if config.webhook_url and config.webhook_secret_arn:
        raise ConfigError("set SLACK_WEBHOOK_URL or SLACK_WEBHOOK_SECRET_ARN, not both")
    if config.bot_token and config.bot_token_secret_arn:
        raise ConfigError("set SLACK_BOT_TOKEN or SLACK_BOT_TOKEN_SECRET_ARN, not both")
    webhook = config.webhook_url or config.webhook_secret_arn
    if webhook and (config.bot_token or config.bot_token_secret_arn):
        # Two Slack sinks would post every alert twice.
        raise ConfigError("configure either a Slack webhook or a bot token, not both")
    if config.slack_mode == "chat" and not config.channel:
        raise ConfigError("SLACK_CHANNEL is required with a bot token")
    if config.slack_mode is None and not config.sns_topic_arn:
        raise ConfigError(
            "nothing to notify: set SLACK_WEBHOOK_URL, SLACK_WEBHOOK_SECRET_ARN, "
            "SLACK_BOT_TOKEN(_SECRET_ARN) + SLACK_CHANNEL, or SNS_TOPIC_ARN"
        )

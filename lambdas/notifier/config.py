"""The notifier's settings, read from the Lambda function's environment.

Parsed once per container; a bad value raises :class:`ConfigError` naming the
variable (never its value: some of them are secrets).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

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
    # Its small nested parsers count towards its complexity; it becomes a validated settings
    # model when the notifier takes the Lambda cookbook's shape (issue 9).
    def from_env(cls, env: Mapping[str, str] | None = None) -> NotifierConfig:  # noqa: C901
        source = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = source.get(name, "").strip()
            return value or None

        def url(name: str) -> str | None:
            value = get(name)
            if value is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
                raise ConfigError(f"{name} must be an http(s):// URL")
            return value

        def number(name: str, default: float, *, minimum: float) -> float:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(f"{name} is not a number") from None
            if not minimum <= value < float("inf"):
                raise ConfigError(f"{name} must be a finite number >= {minimum:g}")
            return value

        table = get("IDEMPOTENCY_TABLE")
        if table is None:
            # Without it "at most one post per alert" cannot hold across containers.
            raise ConfigError("IDEMPOTENCY_TABLE is required")
        config = cls(
            idempotency_table=table,
            webhook_url=url("SLACK_WEBHOOK_URL"),
            webhook_secret_arn=get("SLACK_WEBHOOK_SECRET_ARN"),
            bot_token=get("SLACK_BOT_TOKEN"),
            bot_token_secret_arn=get("SLACK_BOT_TOKEN_SECRET_ARN"),
            channel=get("SLACK_CHANNEL"),
            slack_api_base_url=url("SLACK_API_BASE_URL"),
            sns_topic_arn=get("SNS_TOPIC_ARN"),
            inspect_base_url=url("FRAUD_INSPECT_BASE_URL"),
            dynamodb_endpoint=url("FRAUD_DYNAMODB_ENDPOINT"),
            region=get("AWS_REGION") or get("AWS_DEFAULT_REGION") or "us-east-1",
            slack_timeout_s=number("SLACK_TIMEOUT_SECONDS", 5.0, minimum=1.0),
            slack_max_retries=int(number("SLACK_MAX_RETRIES", 2, minimum=0)),
            idempotency_ttl_s=int(
                number("IDEMPOTENCY_TTL_SECONDS", DEFAULT_IDEMPOTENCY_TTL_S, minimum=60)
            ),
        )
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
        return config

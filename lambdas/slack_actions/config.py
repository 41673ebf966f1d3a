"""The action handler's environment, declared once; a bad value names the variable."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from lambdas.notifier.models.env import ConfigError

# Slack's own host for response_url; a locally served handler widens it to loopback.
DEFAULT_RESPONSE_URL_PREFIX = "https://hooks.slack.com/"


@dataclass(frozen=True)
class ActionsConfig:
    replay_table: str
    signing_secret: str | None = None
    signing_secret_arn: str | None = None
    cases_api_url: str | None = None
    api_token: str | None = None
    api_token_secret_arn: str | None = None
    closer_function: str | None = None
    response_url_prefix: str = DEFAULT_RESPONSE_URL_PREFIX
    dynamodb_endpoint: str | None = None
    region: str = "us-east-1"
    timeout_s: float = 2.0

    def __repr__(self) -> str:
        # Never the signing secret nor the API token.
        return (
            f"ActionsConfig(replay_table={self.replay_table!r}, "
            f"closer={self.closer_function or self.cases_api_url!r})"
        )

    __str__ = __repr__

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ActionsConfig:
        source = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = source.get(name, "").strip()
            return value or None

        replay_table = get("REPLAY_TABLE")
        if replay_table is None:
            raise ConfigError("REPLAY_TABLE is required")
        secret, secret_arn = get("SLACK_SIGNING_SECRET"), get("SLACK_SIGNING_SECRET_ARN")
        if bool(secret) == bool(secret_arn):
            raise ConfigError("set one of SLACK_SIGNING_SECRET or SLACK_SIGNING_SECRET_ARN")
        closer, api_url = get("CLOSER_FUNCTION_NAME"), get("CASES_API_URL")
        token, token_arn = get("FRAUD_API_TOKEN"), get("API_TOKEN_SECRET_ARN")
        if bool(closer) == bool(api_url):
            raise ConfigError("set one of CLOSER_FUNCTION_NAME or CASES_API_URL")
        if bool(token) == bool(token_arn):
            raise ConfigError("set one of FRAUD_API_TOKEN or API_TOKEN_SECRET_ARN")
        for name, value in (
            ("CASES_API_URL", api_url),
            ("SLACK_RESPONSE_URL_PREFIX", get("SLACK_RESPONSE_URL_PREFIX")),
            ("FRAUD_DYNAMODB_ENDPOINT", get("FRAUD_DYNAMODB_ENDPOINT")),
        ):
            if value is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
                raise ConfigError(f"{name} must be an http(s):// URL")
        return cls(
            replay_table=replay_table,
            signing_secret=secret,
            signing_secret_arn=secret_arn,
            cases_api_url=api_url,
            api_token=token,
            api_token_secret_arn=token_arn,
            closer_function=closer,
            response_url_prefix=get("SLACK_RESPONSE_URL_PREFIX") or DEFAULT_RESPONSE_URL_PREFIX,
            dynamodb_endpoint=get("FRAUD_DYNAMODB_ENDPOINT"),
            region=get("AWS_REGION") or get("AWS_DEFAULT_REGION") or "us-east-1",
        )

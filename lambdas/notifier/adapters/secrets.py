"""Slack credentials: given directly in the environment or read from Secrets Manager.

A credential is handed out as a getter, called per send, so a rotated secret takes
effect within :data:`SECRET_MAX_AGE_S`; every value read is taught to the redactor
before anything can log it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.parameters import SecretsProvider

from lambdas.notifier.adapters.redaction import REDACTOR
from lambdas.notifier.models.env import ConfigError

# At DEBUG botocore logs response bodies, and GetSecretValue's body is the webhook URL
# or the bot token: whatever log level the function is given, not that one.
logging.getLogger("botocore.parsers").setLevel(logging.INFO)

# A secret is re-read at most this often, so a rotated webhook URL is picked up.
SECRET_MAX_AGE_S = 300


def secret_text(value: str | bytes | dict[str, Any] | None, keys: tuple[str, ...]) -> str:
    """The secret out of a Secrets Manager value: a plain string or a JSON object.

    Console-created secrets are JSON key/value pairs; a plain string is what
    ``aws secretsmanager create-secret --secret-string URL`` stores.
    """
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, str):
        stripped = value.strip()
        if not stripped.startswith("{"):
            return stripped
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            return stripped
    if isinstance(value, dict):
        for key in keys:
            found = value.get(key)
            if isinstance(found, str) and found.strip():
                return found.strip()
        raise ConfigError(f"secret holds a JSON object without any of the keys {list(keys)}")
    raise ConfigError("secret value is neither a string nor a JSON object")


def credential(
    value: str | None,
    secret_arn: str | None,
    keys: tuple[str, ...],
    *,
    secrets_client: Callable[[], Any],
) -> Callable[[], str]:
    """A getter for a secret given directly or by Secrets Manager ARN; never logged.

    ``keys`` are the JSON keys the secret may be stored under; ``secrets_client``
    (a boto3 Secrets Manager client factory) is called only for an ARN.
    """
    if value:
        REDACTOR.add(value)
        return lambda: value
    assert secret_arn is not None
    provider = SecretsProvider(boto3_client=secrets_client())

    def get() -> str:
        text = secret_text(provider.get(secret_arn, max_age=SECRET_MAX_AGE_S), keys)
        REDACTOR.add(text)
        return text

    return get

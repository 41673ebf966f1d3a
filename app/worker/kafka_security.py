"""How the worker authenticates to Kafka: plaintext locally, TLS and SASL on Amazon MSK.

One description (``FRAUD_KAFKA_*``) gives both Faust's ``broker_credentials`` (its own
consumer and producer) and the keyword arguments of every aiokafka client the app opens
itself (the rules follower, the archive, the alerts-tail reader, the lag reader, the
partition check), so no client can be left on plaintext by mistake.

``AWS_MSK_IAM`` signs a SASL/OAUTHBEARER token with the usual AWS credential chain (the
ECS task role on AWS) through AWS's ``aws-msk-iam-sasl-signer-python``; ``SCRAM-SHA-512``
takes a user name and password (e.g. from Secrets Manager through the task's env).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from functools import cache
from typing import Any

from aiokafka.abc import AbstractTokenProvider

from app.worker.settings import Settings, load_settings

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_SSL")
MECHANISMS = ("AWS_MSK_IAM", "SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
# Refresh an MSK IAM token this long before it expires (they live 15 minutes).
_REFRESH_MARGIN_S = 60.0


class MskIamTokens(AbstractTokenProvider):  # type: ignore[misc]
    """SASL/OAUTHBEARER tokens for MSK IAM auth, signed for ``region``, reused until near
    expiry (aiokafka asks at every connection)."""

    def __init__(self, region: str) -> None:
        self.region = region
        self._token: str | None = None
        self._expires_at = 0.0

    async def token(self) -> str:
        if self._token is not None and time.time() < self._expires_at - _REFRESH_MARGIN_S:
            return self._token
        # Signing may fetch credentials (the ECS task role endpoint): off the loop.
        fresh, expiry_ms = await asyncio.to_thread(self._generate)
        self._token, self._expires_at = fresh, expiry_ms / 1000
        return fresh

    def _generate(self) -> tuple[str, int]:
        from aws_msk_iam_sasl_signer import MSKAuthTokenProvider  # noqa: PLC0415 - AWS only

        token, expiry_ms = MSKAuthTokenProvider.generate_auth_token(self.region)
        return str(token), int(expiry_ms)


def _ssl_context(settings: Settings) -> ssl.SSLContext:
    # The system's CAs by default (MSK's certificates chain to Amazon's public roots).
    return ssl.create_default_context(cafile=settings.kafka_ca_file)


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for an aiokafka client (consumer, producer or admin)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {"security_protocol": "PLAINTEXT"}
    options: dict[str, Any] = {"security_protocol": protocol, "ssl_context": _ssl_context(settings)}
    if protocol == "SSL":
        return options
    mechanism = settings.kafka_sasl_mechanism
    if mechanism == "AWS_MSK_IAM":
        options.update(sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=_iam(settings))
    else:
        options.update(
            sasl_mechanism=mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password,
        )
    return options


@cache
def _iam_for_region(region: str) -> MskIamTokens:
    return MskIamTokens(region)


def _iam(settings: Settings) -> MskIamTokens:
    # One provider per region, so every client of the process shares its cached token.
    return _iam_for_region(settings.aws_region)


def faust_credentials(settings: Settings) -> Any:
    """Faust's ``broker_credentials`` for the same settings (None for plaintext)."""
    from faust.auth import OAuthCredentials, SASLCredentials, SSLCredentials  # noqa: PLC0415

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = _ssl_context(settings)
    if protocol == "SSL":
        return SSLCredentials(context)
    if settings.kafka_sasl_mechanism == "AWS_MSK_IAM":
        return OAuthCredentials(oauth_cb=_iam(settings), ssl_context=context)
    return SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password,
        ssl_context=context,
        mechanism=settings.kafka_sasl_mechanism,
    )


@cache
def kafka_options() -> dict[str, Any]:
    """:func:`client_options` for this process's settings (the environment's)."""
    return client_options(load_settings())

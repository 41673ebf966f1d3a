"""app.worker.kafka_security: the FRAUD_KAFKA_* settings reach every Kafka client, Faust's
own included, and refuse combinations that cannot work, naming the variable."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from app.worker import kafka_security
from app.worker.faust_app import app
from app.worker.kafka_security import MskIamTokens, client_options, faust_credentials
from app.worker.settings import Settings, SettingsError, load_settings

IAM = {"FRAUD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "FRAUD_KAFKA_SASL_MECHANISM": "AWS_MSK_IAM"}
SCRAM = {
    "FRAUD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "FRAUD_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "FRAUD_KAFKA_SASL_USERNAME": "fraud-worker",
    "FRAUD_KAFKA_SASL_PASSWORD": "s3cr3t-pw",
}


def client_of(options: dict[str, Any]) -> Any:
    """The connection settings aiokafka keeps for a consumer built with ``options``."""

    async def build() -> Any:
        consumer = AIOKafkaConsumer(bootstrap_servers="b-1.msk.example:9098", **options)
        client = consumer._client
        await consumer.stop()
        return client

    return asyncio.run(build())


def worker_consumer_client(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The client of the consumer Faust builds for the worker with these settings (set
    late on purpose: Faust warns, and reads them when it builds the consumer)."""
    monkeypatch.setattr(app.conf, "broker_credentials", faust_credentials(settings))

    async def build() -> Any:
        thread = app.consumer._new_consumer_thread()  # type: ignore[attr-defined]
        return thread._create_worker_consumer(app.transport)._client

    return asyncio.run(build())


def test_plaintext_is_the_default_and_changes_nothing() -> None:
    settings = load_settings({})
    assert client_options(settings) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(settings) is None


@pytest.mark.filterwarnings("ignore::faust.exceptions.AlreadyConfiguredWarning")
def test_msk_iam_auth_reaches_faust_s_consumer_and_the_app_s_own_clients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = load_settings({**IAM, "FRAUD_AWS_REGION": "eu-west-1"})
    for client in (
        client_of(client_options(settings)),
        worker_consumer_client(settings, monkeypatch),
    ):
        assert client._security_protocol == "SASL_SSL"
        assert client._sasl_mechanism == "OAUTHBEARER"
        provider = client._sasl_oauth_token_provider
        assert isinstance(provider, MskIamTokens) and provider.region == "eu-west-1"
        assert client._ssl_context is not None


@pytest.mark.filterwarnings("ignore::faust.exceptions.AlreadyConfiguredWarning")
def test_scram_credentials_reach_faust_s_consumer_and_the_app_s_own_clients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = load_settings(SCRAM)
    for client in (
        client_of(client_options(settings)),
        worker_consumer_client(settings, monkeypatch),
    ):
        assert client._security_protocol == "SASL_SSL"
        assert client._sasl_mechanism == "SCRAM-SHA-512"
        assert (client._sasl_plain_username, client._sasl_plain_password) == (
            "fraud-worker",
            "s3cr3t-pw",
        )


def test_every_direct_client_takes_the_process_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SCRAM.items():
        monkeypatch.setenv(name, value)
    kafka_security.kafka_options.cache_clear()
    try:
        assert kafka_security.kafka_options()["sasl_mechanism"] == "SCRAM-SHA-512"
    finally:
        kafka_security.kafka_options.cache_clear()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"FRAUD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "FRAUD_KAFKA_SASL_MECHANISM"),
        ({"FRAUD_KAFKA_SASL_MECHANISM": "AWS_MSK_IAM"}, "FRAUD_KAFKA_SASL_MECHANISM"),
        ({**SCRAM, "FRAUD_KAFKA_SASL_PASSWORD": ""}, "FRAUD_KAFKA_SASL_PASSWORD"),
        ({"FRAUD_KAFKA_SECURITY_PROTOCOL": "TLS"}, "FRAUD_KAFKA_SECURITY_PROTOCOL"),
        ({**IAM, "FRAUD_KAFKA_SASL_MECHANISM": "GSSAPI"}, "FRAUD_KAFKA_SASL_MECHANISM"),
        ({"FRAUD_KAFKA_CA_FILE": "/nonexistent/ca.pem"}, "FRAUD_KAFKA_CA_FILE"),
    ],
)
def test_settings_that_cannot_work_stop_the_worker_naming_the_variable(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings(env)


def test_the_sasl_password_is_never_shown() -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings({**SCRAM, "FRAUD_KAFKA_SASL_PASSWORD": "two words"})
    assert "two words" not in str(refused.value) and "(hidden)" in str(refused.value)
    assert "s3cr3t-pw" not in repr(load_settings(SCRAM))


def test_an_msk_iam_token_is_signed_once_and_reused_until_near_expiry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    signed: list[int] = []
    now = [1_000_000.0]

    def sign(self: MskIamTokens) -> tuple[str, int]:
        signed.append(1)
        return f"token-{len(signed)}", int((now[0] + 900) * 1000)

    monkeypatch.setattr(MskIamTokens, "_generate", sign)
    monkeypatch.setattr("app.worker.kafka_security.time.time", lambda: now[0])
    tokens = MskIamTokens("us-east-1")

    async def ask() -> str:
        return await tokens.token()

    assert asyncio.run(ask()) == "token-1"
    now[0] += 600
    assert asyncio.run(ask()) == "token-1"
    now[0] += 260  # within a minute of expiry
    assert asyncio.run(ask()) == "token-2"

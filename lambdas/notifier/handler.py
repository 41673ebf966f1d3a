"""Lambda handler: DynamoDB Streams records of ``fraud_alerts`` -> Slack, then SNS.

Per record: only an INSERT of an ``active`` alert notifies. Each sink is guarded by
its own Powertools idempotency record keyed on ``alert_id``, so a redelivered
record (a retried batch, a replayed shard) never posts twice, and a record whose
Slack post succeeded but whose SNS publish failed is retried for SNS only.

A record that fails is reported in ``batchItemFailures`` (by SequenceNumber, which is
what the event source mapping expects for streams); the others still succeed.

Environment: see :mod:`lambdas.notifier.config`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyPersistenceLayerError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from lambdas.notifier import idempotency
from lambdas.notifier.alert import Alert, MalformedAlertError, classify_record
from lambdas.notifier.aws import aws_client
from lambdas.notifier.blocks import build_blocks, fallback_text
from lambdas.notifier.config import ConfigError, NotifierConfig
from lambdas.notifier.slack import (
    REDACTOR,
    ChatPostMessageSender,
    RetryBudget,
    SlackSender,
    WebhookSender,
)
from lambdas.notifier.sns import publish_request

logger = Logger(service="fraud-notifier")
# At DEBUG botocore logs response bodies, and GetSecretValue's body is the webhook URL
# or the bot token: whatever log level the function is given, not that one.
logging.getLogger("botocore.parsers").setLevel(logging.INFO)

# A secret is re-read at most this often, so a rotated webhook URL is picked up.
_SECRET_MAX_AGE_S = 300


class NotificationError(Exception):
    """A record could not be fully delivered; the message is safe to log."""


class BudgetExhaustedError(NotificationError):
    """Too little time left in this invocation to post; the record is left for redelivery."""


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


def _describe(exc: BaseException) -> str:
    """A log-safe one-liner for an exception raised by a sink."""
    if isinstance(exc, IdempotencyAlreadyInProgressError):
        return "another invocation is delivering this alert right now"
    if isinstance(exc, IdempotencyPersistenceLayerError):
        cause = exc.__cause__
        detail = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
        return f"idempotency table: {REDACTOR(detail)}"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'ClientError')}: {REDACTOR(str(error.get('Message', '')))}"
    return f"{type(exc).__name__}: {REDACTOR(str(exc))}"


class Notifier:
    """One container's notifier: config, clients and the idempotent sinks."""

    def __init__(
        self,
        config: NotifierConfig,
        *,
        dynamodb_client: Any = None,
        sns_client: Any = None,
        secrets_client: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.budget = RetryBudget(clock)
        self.idempotency_config = IdempotencyConfig(
            event_key_jmespath="alert_id",
            # Without a key Powertools would run the sink unguarded; an alert without
            # alert_id is refused earlier, this makes the guarantee not depend on that.
            raise_on_no_idempotency_key=True,
            expires_after_seconds=config.idempotency_ttl_s,
            response_hook=self._on_replay,
        )
        # Sinks whose idempotency record was already COMPLETED for the current record.
        self._replayed: list[str] = []
        ddb = dynamodb_client or aws_client("dynamodb", config.region, config.dynamodb_endpoint)
        self._secrets_client = secrets_client
        self._slack = self._build_slack_sender()
        self._sns = None
        if config.sns_topic_arn:
            self._sns = sns_client or aws_client("sns", config.region)
        self._post_slack_once: Callable[..., dict[str, Any]] = idempotent_function(
            self._post_slack,
            data_keyword_argument="alert",
            persistence_store=idempotency.persistence_layer(config.idempotency_table, ddb),
            config=self.idempotency_config,
            key_prefix=idempotency.SLACK_KEY_PREFIX,
        )
        self._publish_sns_once: Callable[..., dict[str, Any]] = idempotent_function(
            self._publish_sns,
            data_keyword_argument="alert",
            persistence_store=idempotency.persistence_layer(config.idempotency_table, ddb),
            config=self.idempotency_config,
            key_prefix=idempotency.SNS_KEY_PREFIX,
        )

    def _on_replay(self, response: Any, idempotent_data: DataRecord) -> Any:
        # Powertools calls this instead of the sink when the alert was already delivered.
        self._replayed.append(idempotent_data.idempotency_key.split("#", 1)[0].rsplit(".", 1)[-1])
        return response

    def _secret_getter(self, arn: str, keys: tuple[str, ...]) -> Callable[[], str]:
        client = self._secrets_client or aws_client("secretsmanager", self.config.region)
        provider = SecretsProvider(boto3_client=client)

        def get() -> str:
            value = secret_text(provider.get(arn, max_age=_SECRET_MAX_AGE_S), keys)
            REDACTOR.add(value)
            return value

        return get

    def _credential(
        self, value: str | None, secret_arn: str | None, keys: tuple[str, ...]
    ) -> Callable[[], str]:
        """A getter for a secret given directly or by Secrets Manager ARN; never logged."""
        if value:
            REDACTOR.add(value)
            return lambda: value
        assert secret_arn is not None
        return self._secret_getter(secret_arn, keys)

    def _build_slack_sender(self) -> SlackSender | None:
        cfg = self.config
        if cfg.slack_mode == "webhook":
            return WebhookSender(
                url=self._credential(
                    cfg.webhook_url, cfg.webhook_secret_arn, ("webhook_url", "url")
                ),
                budget=self.budget,
                timeout_s=cfg.slack_timeout_s,
                max_retries=cfg.slack_max_retries,
            )
        if cfg.slack_mode == "chat":
            assert cfg.channel is not None
            return ChatPostMessageSender(
                token=self._credential(
                    cfg.bot_token, cfg.bot_token_secret_arn, ("bot_token", "token")
                ),
                channel=cfg.channel,
                budget=self.budget,
                base_url=cfg.slack_api_base_url,
                timeout_s=cfg.slack_timeout_s,
                max_retries=cfg.slack_max_retries,
            )
        return None

    # The two sinks. Each runs under its own idempotency record; what they return is
    # stored there (so: nothing secret).

    def _post_slack(self, *, alert: Alert) -> dict[str, Any]:
        assert self._slack is not None
        return self._slack.send(
            text=fallback_text(alert), blocks=build_blocks(alert, self.config.inspect_base_url)
        )

    def _publish_sns(self, *, alert: Alert) -> dict[str, Any]:
        assert self._sns is not None and self.config.sns_topic_arn is not None
        try:
            response = self._sns.publish(**publish_request(alert, self.config.sns_topic_arn))
        except (ClientError, BotoCoreError) as exc:
            raise NotificationError(f"SNS publish failed: {_describe(exc)}") from None
        return {"sink": "sns", "message_id": str(response.get("MessageId", ""))}

    def handle(self, event: dict[str, Any], context: LambdaContext | None) -> dict[str, Any]:
        if context is not None:
            # Lets Powertools expire an INPROGRESS record when this invocation's time
            # is up, so a crash mid-post does not block the alert until the record TTL.
            self.idempotency_config.register_lambda_context(context)
            self.budget.start(context.get_remaining_time_in_millis() / 1000 - self.config.reserve_s)
        else:
            self.budget.start(None)
        processor = BatchProcessor(
            event_type=EventType.DynamoDBStreams,
            # Reporting every record as failed is what the event source mapping needs;
            # raising instead would also log every record's traceback once more.
            raise_on_entire_batch_failure=False,
        )
        response = process_partial_response(
            event=event, record_handler=self.process_record, processor=processor, context=context
        )
        return dict(response)

    def process_record(self, record: DynamoDBRecord) -> str:
        """Notify one record; raise to have it listed in ``batchItemFailures``."""
        log_keys = {"event_id": record.event_id, "event_name": record.raw_event.get("eventName")}
        try:
            decision = classify_record(record.raw_event)
        except MalformedAlertError as exc:
            # Failing would block the shard behind a record that can never succeed; the
            # row itself is still in fraud_alerts for a human to look at.
            logger.error("malformed alert record skipped", extra={**log_keys, "error": str(exc)})
            return "malformed"
        if not decision.notify:
            logger.debug(
                "record ignored",
                extra={**log_keys, "reason": decision.reason, "alert_id": decision.alert_id},
            )
            return decision.reason
        alert = decision.alert
        assert alert is not None
        keys = {**log_keys, "alert_id": alert.alert_id, "rule_id": alert.rule_id}

        needed = self.config.slack_timeout_s if self._slack is not None else 1.0
        if self.budget.remaining() < needed:
            logger.warning("no time left; record left for redelivery", extra=keys)
            raise BudgetExhaustedError(f"alert {alert.alert_id}: invocation time budget exhausted")

        # Each sink is tried even if the other failed: a Slack outage must not hold back
        # SNS subscribers (and vice versa); the redelivery retries only the failed one.
        failures: list[str] = []
        self._replayed = []
        if self._slack is not None:
            try:
                self._post_slack_once(alert=alert)
            except Exception as exc:
                failures.append(f"slack: {_describe(exc)}")
        if self._sns is not None:
            try:
                self._publish_sns_once(alert=alert)
            except Exception as exc:
                failures.append(f"sns: {_describe(exc)}")
        if failures:
            message = f"alert {alert.alert_id} not delivered: " + "; ".join(failures)
            logger.warning("delivery failed; will be retried", extra={**keys, "error": message})
            raise NotificationError(message)

        sinks = int(self._slack is not None) + int(self._sns is not None)
        if len(self._replayed) == sinks:
            logger.info("alert already notified; redelivery ignored", extra=keys)
            return "already-notified"
        extra: dict[str, Any] = {**keys, "severity": alert.severity}
        if self._replayed:
            extra["already_delivered_to"] = self._replayed
        if alert.trigger_produced_at_ms is not None:
            extra["notify_latency_ms"] = int(time.time() * 1000) - alert.trigger_produced_at_ms
        logger.info("alert notified", extra=extra)
        return "notified"


_notifier: Notifier | None = None


def get_notifier() -> Notifier:
    """The container's notifier, built from the environment on first use."""
    global _notifier  # noqa: PLW0603 - one per Lambda container, by design
    if _notifier is None:
        try:
            _notifier = Notifier(NotifierConfig.from_env())
        except ConfigError as exc:
            logger.error("notifier misconfigured", extra={"error": str(exc)})
            raise
    return _notifier


def reset_notifier() -> None:
    """Forget the cached notifier (tests, or a local runner after changing the environment)."""
    global _notifier  # noqa: PLW0603
    _notifier = None


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point (``lambdas.notifier.handler.handler``)."""
    return get_notifier().handle(event, context)

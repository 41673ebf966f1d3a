"""One alert record -> Slack, then SNS: the notifier's per-record decision and fan-out.

Per record: only an INSERT of an ``active`` alert notifies. An alert that joined an open
case does not page: with a bot token and the cases table, its case's message is updated
in place (``chat.update``, the message's ts kept on the case row). Each sink is guarded by
its own Powertools idempotency record keyed on ``alert_id``, so a redelivered
record (a retried batch, a replayed shard) never posts twice, and a record whose
Slack post succeeded but whose SNS publish failed is retried for SNS only.

:meth:`Notifier.process_record` raises for a record that must be redelivered; the
handler's batch processor reports it in ``batchItemFailures``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyPersistenceLayerError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from lambdas.notifier.adapters import idempotency, sns
from lambdas.notifier.adapters.aws import aws_client
from lambdas.notifier.adapters.cases import CaseMessages, number, release, text
from lambdas.notifier.adapters.redaction import REDACTOR
from lambdas.notifier.adapters.slack import ChatPostMessageSender, SlackSendError, slack_sender
from lambdas.notifier.adapters.slack_retry import RetryBudget
from lambdas.notifier.logic.blocks import CaseTally, build_blocks, fallback_text
from lambdas.notifier.models.alert import JOINED, Alert, MalformedAlertError, classify_record
from lambdas.notifier.models.env import NotifierConfig
from lambdas.notifier.observability import logger


class NotificationError(Exception):
    """A record could not be fully delivered; the message is safe to log."""


class BudgetExhaustedError(NotificationError):
    """Too little time left in this invocation to post; the record is left for redelivery."""


def describe_error(exc: BaseException) -> str:
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
        self.idempotency_config = idempotency.idempotency_config(
            config.idempotency_ttl_s, self._on_replay
        )
        # Sinks whose idempotency record was already COMPLETED for the current record.
        self._replayed: list[str] = []
        ddb = dynamodb_client or aws_client("dynamodb", config.region, config.dynamodb_endpoint)
        self._slack = slack_sender(
            config,
            self.budget,
            secrets_client=lambda: secrets_client or aws_client("secretsmanager", config.region),
        )
        # A case's message is updated in place (chat.update) as its alerts join: only a
        # bot token's post can be updated, and only with the cases table to keep its ts.
        self._cases: CaseMessages | None = None
        if config.cases_table and isinstance(self._slack, ChatPostMessageSender):
            self._cases = CaseMessages(ddb, config.cases_table)
        self._sns = None
        if config.sns_topic_arn:
            self._sns = sns_client or aws_client("sns", config.region)
        self._post_slack_once = idempotency.once_per_alert(
            self._post_slack,
            key_prefix=idempotency.SLACK_KEY_PREFIX,
            table_name=config.idempotency_table,
            client=ddb,
            config=self.idempotency_config,
        )
        self._publish_sns_once = idempotency.once_per_alert(
            self._publish_sns,
            key_prefix=idempotency.SNS_KEY_PREFIX,
            table_name=config.idempotency_table,
            client=ddb,
            config=self.idempotency_config,
        )

    def _on_replay(self, response: Any, idempotent_data: DataRecord) -> Any:
        # Powertools calls this instead of the sink when the alert was already delivered.
        self._replayed.append(idempotency.sink_of(idempotent_data))
        return response

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
            return sns.publish(self._sns, alert, self.config.sns_topic_arn)
        except (ClientError, BotoCoreError) as exc:
            raise NotificationError(f"SNS publish failed: {describe_error(exc)}") from None

    def start_invocation(self, context: LambdaContext | None) -> None:
        """Per invocation, before any record: the time budget and the idempotency deadline."""
        if context is None:
            self.budget.start(None)
            return
        # Lets Powertools expire an INPROGRESS record when this invocation's time
        # is up, so a crash mid-post does not block the alert until the record TTL.
        self.idempotency_config.register_lambda_context(context)
        self.budget.start(context.get_remaining_time_in_millis() / 1000 - self.config.reserve_s)

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
        if decision.reason == JOINED and decision.alert is not None and self._cases is not None:
            return self._update_case(decision.alert, {**log_keys, "alert_id": decision.alert_id})
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

        failures = self._deliver(alert)
        if failures:
            message = f"alert {alert.alert_id} not delivered: " + "; ".join(failures)
            logger.warning("delivery failed; will be retried", extra={**keys, "error": message})
            raise NotificationError(message)
        return self._log_delivered(alert, keys)

    def _deliver(self, alert: Alert) -> list[str]:
        """Each configured sink, once per alert; the log-safe failures."""
        # Each sink is tried even if the other failed: a Slack outage must not hold back
        # SNS subscribers (and vice versa); the redelivery retries only the failed one.
        failures: list[str] = []
        self._replayed = []
        if self._slack is not None:
            try:
                receipt = self._post_slack_once(alert=alert)
            except Exception as exc:
                failures.append(f"slack: {describe_error(exc)}")
            else:
                try:
                    self._remember_message(alert, receipt)
                except Exception as exc:  # the post stands; a redelivery remembers it
                    failures.append(f"case message: {describe_error(exc)}")
        if self._sns is not None:
            try:
                self._publish_sns_once(alert=alert)
            except Exception as exc:
                failures.append(f"sns: {describe_error(exc)}")
        return failures

    def _remember_message(self, alert: Alert, receipt: Any) -> None:
        """Keep the opening post's ts on its case; if alerts joined before it was posted,
        update the message at once to show them."""
        if self._cases is None or not alert.case_id or not isinstance(receipt, dict):
            return
        channel, ts = receipt.get("channel"), receipt.get("ts")
        if not channel or not ts:
            return
        case = self._cases.remember(alert.case_id, str(channel), str(ts))
        if case is not None and number(case, "alert_count") > 1:
            self._show(alert, case)

    def _update_case(self, alert: Alert, keys: dict[str, Any]) -> str:
        """A later alert of an open case: its message updated, not a second page."""
        assert self._cases is not None and alert.case_id is not None
        if self.budget.remaining() < self.config.slack_timeout_s:
            raise BudgetExhaustedError(f"alert {alert.alert_id}: invocation time budget exhausted")
        case = self._cases.get(alert.case_id)
        if case is None or not text(case, "slack_ts"):
            # Not posted yet: the opening post shows the case as it is then.
            logger.info("case message not posted yet", extra={**keys, "case_id": alert.case_id})
            return "case-not-posted"
        try:
            shown = self._show(alert, case)
        except SlackSendError as exc:
            message = f"alert {alert.alert_id}: case message not updated: {exc}"
            logger.warning("case update failed; will be retried", extra={**keys, "error": message})
            raise NotificationError(message) from None
        logger.info("case message updated" if shown else "case message already newer", extra=keys)
        return "case-updated" if shown else "case-update-superseded"

    def _show(self, alert: Alert, case: dict[str, Any]) -> bool:
        """chat.update of the case's message with ``alert`` and the case's counts, if no
        newer state of the case has claimed the message."""
        assert self._cases is not None and isinstance(self._slack, ChatPostMessageSender)
        count = number(case, "alert_count")
        if not self._cases.claim(str(alert.case_id), count):
            return False
        tally = CaseTally(count, number(case, "txn_count"), text(case, "opened_at"))
        try:
            self._slack.update(
                channel=text(case, "slack_channel"),
                ts=text(case, "slack_ts"),
                text=fallback_text(alert),
                blocks=build_blocks(alert, self.config.inspect_base_url, tally),
            )
        except SlackSendError:
            release(self._cases, str(alert.case_id), count)  # the retry claims it again
            raise
        return True

    def _log_delivered(self, alert: Alert, keys: dict[str, Any]) -> str:
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

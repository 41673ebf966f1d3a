"""Lambda entry point: DynamoDB Streams records of ``fraud_alerts`` -> the notifier.

Thin by design: inject the Lambda context into the logs, build the container's
:class:`~lambdas.notifier.logic.notifier.Notifier` once from the environment
(:mod:`lambdas.notifier.models.env`), and hand the batch to Powertools' batch
processor. A record that fails is reported in ``batchItemFailures`` (by
SequenceNumber, which is what the event source mapping expects for streams); the
others still succeed.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.notifier.logic.notifier import Notifier
from lambdas.notifier.models.env import ConfigError, NotifierConfig
from lambdas.notifier.observability import logger

__all__ = ["get_notifier", "handler", "logger", "reset_notifier"]

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
    """Lambda entry point (``lambdas.notifier.handlers.notify.handler``)."""
    notifier = get_notifier()
    notifier.start_invocation(context)
    processor = BatchProcessor(
        event_type=EventType.DynamoDBStreams,
        # Reporting every record as failed is what the event source mapping needs;
        # raising instead would also log every record's traceback once more.
        raise_on_entire_batch_failure=False,
    )
    response = process_partial_response(
        event=event, record_handler=notifier.process_record, processor=processor, context=context
    )
    return dict(response)

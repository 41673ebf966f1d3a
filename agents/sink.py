"""The DynamoDB sink: every alert on the alerts topic becomes one row, written once.

Acking. Faust commits a partition's offset up to the highest *acked* contiguous
offset. ``stream.take()``/``take_events()`` ack a batch in a ``finally`` block: when
the loop asks for the next batch, but also when the generator is closed because the
agent was cancelled (worker shutdown, rebalance) or raised, i.e. possibly before the
rows exist, after which the shutdown commit would skip those alerts for good. So the
agent uses ``noack_take()``, which never acks, and acks each event itself only after
its whole batch is in the table (or, for an undecodable record, in the DLQ). It never
raises out of the loop either: an agent crash would leave its unacked offsets behind
while Faust restarts it past them. Batches are written one after another and acked in
stream order, so acked offsets stay contiguous per partition.

The writer itself (conditional puts, batching, retries, health) is
``app.delivery.alert_writer``. The sink is registered only when ``FRAUD_SINK_ENABLED``
is true (the default).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from agents.delivery import dead_letter
from app.delivery.alert_writer import (
    BACKOFF_BASE_S,
    BACKOFF_CAP_S,
    AlertWriter,
    make_client,
    sink_stats,
)
from app.delivery.backoff import Retry
from app.delivery.dynamodb import put_request
from app.detection.models import Alert
from app.worker.failures import failures
from app.worker.faust_app import alerts_topic, app, settings

log = logging.getLogger(__name__)

BATCH_SIZE = 25  # BatchWriteItem's limit, kept as the unit of concurrent conditional puts
# How long a lone alert may wait for company. Short, because waiting buys nothing when
# alerts are sparse; under load batches fill anyway from events queued during the
# previous batch's writes.
BATCH_WITHIN_S = 0.01


def decode(event: Any, table: str) -> Alert | str:
    """The alert an event carries, or why it is not one (for the DLQ record).

    Building the row is part of decoding: a record whose row cannot be built would
    fail the same way on every retry, so it goes to the DLQ instead of stalling the sink.
    """
    try:
        alert = Alert.from_json(event.value)
        put_request(table, alert)
        return alert
    except Exception as exc:  # any record, however hostile, must not stop the sink
        return f"not an alert: {type(exc).__name__}"


async def sink_events(events: Sequence[Any], writer: AlertWriter) -> None:
    """Make every event of a batch durable: as a table row, or as a DLQ record."""
    alerts: list[Alert] = []
    for event in events:
        decoded = decode(event, writer.table)
        if isinstance(decoded, Alert):
            alerts.append(decoded)
        else:
            log.error(
                "dynamodb sink: record at %s[%d]@%d is %s; sending it to the DLQ",
                event.message.topic,
                event.message.partition,
                event.message.offset,
                decoded,
            )
            await dead_letter(event.message, "alert_undecodable", decoded, wait=True)
            writer.stats.dead_lettered += 1
    if alerts:
        await writer.write(alerts)


async def sink_durably(events: Sequence[Any], writer: AlertWriter) -> None:
    """:func:`sink_events`, retried until the whole batch is durable."""
    where = f"a batch of {len(events)}"
    # An error out of sink_events is unforeseen (the writer retries DynamoDB's own errors,
    # undecodable records go to the DLQ): the batch is not durable, so it is neither acked
    # nor dropped but tried again. Writes are conditional, so a retried batch creates no
    # row twice. Cancellation is never retried.
    retry = Retry(
        f"dynamodb sink: {where} alerts not made durable",
        base=BACKOFF_BASE_S,
        cap=BACKOFF_CAP_S,
        log=log,
        on_failure=lambda exc: failures.internal_error("dynamodb-sink", exc, where),
    )
    await retry.run(lambda: sink_events(events, writer))


async def run_sink(stream: Any, writer: AlertWriter) -> None:
    """The agent's loop: take a batch, make it durable, only then ack its events."""
    # noack_take, not take: see the module docstring (take acks on cancellation too).
    async for events in stream.noack_take(BATCH_SIZE, within=BATCH_WITHIN_S):
        await sink_durably(events, writer)
        for event in events:
            await stream.ack(event)


async def sink(stream: Any) -> None:
    writer = AlertWriter(
        settings.dynamodb_table,
        lambda: make_client(settings.aws_region, settings.dynamodb_endpoint),
        cases_table=settings.cases_table if settings.cases_enabled else None,
    )
    log.info(
        "dynamodb sink: writing alerts from %s to table %s at %s (%s)",
        alerts_topic.get_topic_name(),
        settings.dynamodb_table,
        settings.dynamodb_endpoint or f"AWS {settings.aws_region}",
        f"cases in table {settings.cases_table}" if settings.cases_enabled else "no cases",
    )
    try:
        await run_sink(stream, writer)
    finally:
        writer.close()


if settings.sink_enabled:
    # Registered only when enabled, so a worker without a table does not retry forever.
    sink_stats.enabled = True
    sink_agent = app.agent(alerts_topic, name="dynamodb-sink")(sink)

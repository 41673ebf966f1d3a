"""Changelog-backed tables (RocksDB by default)."""

from __future__ import annotations

import contextvars
from datetime import timedelta
from typing import Any, cast

import faust

from app.worker.faust_app import PARTITIONS, app, settings
from app.worker.settings import state_retention_ms

JSON_SCHEMA: faust.Schema[str, Any] = faust.Schema(key_serializer="json", value_serializer="json")

# A key's changelog record outlives what any rule could still use of it: the state
# retention (FRAUD_STATE_RETENTION; by default the longest aggregate or sequence window,
# the allowed lateness and a day's margin; no rule in force has a window and lateness
# beyond it), counted from the record's last write. A key seen once and never again
# (random card tokens) then leaves the changelog, so a restore (a new or moved worker)
# does not carry it forever: compacted *and* deleted by age. Faust applies this when it
# creates the topic; an existing deployment's changelogs need it set whenever it changes
# (docs/how-to/upgrade.md).
STATE_RETENTION_MS = state_retention_ms(settings)
STATE_TOPIC_CONFIGS = {"cleanup.policy": "compact,delete", "retention.ms": str(STATE_RETENTION_MS)}

# The state of each card: newest event time and every card-keyed rule's pool of
# unused qualifying events (see app.detection.engine). One read and one write per payment.
card_state = app.Table(
    "card-state",
    extra_topic_configs=STATE_TOPIC_CONFIGS,
    default=None,
    partitions=PARTITIONS,
    schema=JSON_SCHEMA,
    help="Per card: newest event time and each rule's recent qualifying events.",
)

# The same per group key for rules grouped by other fields; keys are "group\x1fkey".
group_state = app.Table(
    "group-state",
    extra_topic_configs=STATE_TOPIC_CONFIGS,
    default=None,
    partitions=PARTITIONS,
    schema=JSON_SCHEMA,
    help="Per account/device/ip (or combination) key: each rule's recent qualifying events.",
)

# The most recent alerts per card (newest last), for the inspection endpoints.
card_alerts = app.Table(
    "card-alerts",
    extra_topic_configs=STATE_TOPIC_CONFIGS,
    default=list,
    partitions=PARTITIONS,
    schema=JSON_SCHEMA,
    help="Per card: its most recent alerts.",
)
RECENT_ALERTS_PER_CARD = 20

# Faust windows a table by the event's Kafka timestamp unless told otherwise; the
# agent sets this to the payment's own event time so windows follow event time.
current_event_time: contextvars.ContextVar[float] = contextvars.ContextVar("current_event_time")

WINDOW_S = 300.0

# ``relative_to`` exists on Faust's WindowWrapper but is missing from its type stub.
high_value_counts = cast(
    Any,
    (
        app.Table(
            "high-value-counts",
            default=int,
            partitions=PARTITIONS,
            schema=JSON_SCHEMA,
            help="Payments of at least the high-value amount per card per 5-minute window.",
        ).tumbling(WINDOW_S, expires=timedelta(hours=2))
    ),
).relative_to(lambda event: current_event_time.get())

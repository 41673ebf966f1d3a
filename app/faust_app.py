"""The Faust application object and its topics, configured from FRAUD_* settings."""

from __future__ import annotations

import logging
import sys

import faust

from app.settings import Settings, SettingsError, load_settings


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        # Fail at start-up, naming the variable, rather than half-start a worker.
        print(f"fraud-detection: bad setting: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


settings = _settings_or_exit()

app = faust.App(
    settings.app_id,
    broker=settings.broker,
    store=settings.store,
    datadir=str(settings.datadir),
    topic_partitions=settings.partitions,
    topic_replication_factor=settings.topic_replication,
    processing_guarantee=settings.processing_guarantee,
    web_bind=settings.web_bind,
    web_port=settings.web_port,
    web_host=settings.web_bind if settings.web_bind != "0.0.0.0" else "127.0.0.1",
    key_serializer="raw",
    value_serializer="raw",
    consumer_auto_offset_reset="earliest",
    # Alerts and DLQ records are sent (and alerts awaited) inside the agent;
    # a short commit interval keeps the replay after a crash small.
    broker_commit_interval=1.0,
    # A dead worker's partitions move after 10 s instead of Faust's 60 s default.
    broker_session_timeout=10.0,
    broker_heartbeat_interval=1.0,
    producer_acks=-1,
    # Changelog writes, forwarded payments and DLQ records batch for up to 5 ms.
    producer_linger_ms=5,
    stream_wait_empty=False,
    table_cleanup_interval=30.0,
    origin="app",
)

payments_topic = app.topic(settings.topic_payments, partitions=settings.partitions)
alerts_topic = app.topic(settings.topic_alerts, partitions=settings.partitions)
dlq_topic = app.topic(settings.topic_dlq, partitions=settings.partitions)
# Payments re-keyed for rules grouped by something other than the card.
regroup_topic = app.topic(
    f"{settings.app_id}-payments-by-group", partitions=settings.partitions, internal=True
)


@app.task  # type: ignore[untyped-decorator]
async def keep_root_logger_at_its_level() -> None:
    """Undo Faust's spinner trick: with ``-l warn`` or above the worker sets the root
    logger to DEBUG so that every record spins its console spinner; every library
    ``log.debug`` (aiokafka logs each send) then builds a LogRecord. Profiled: 5 % of
    the worker's CPU. The configured handler keeps its level, so output is unchanged."""
    root = logging.getLogger()
    levels = [h.level for h in root.handlers if type(h).__name__ != "SpinnerHandler" and h.level]
    if levels and root.level < min(levels):
        root.setLevel(min(levels))

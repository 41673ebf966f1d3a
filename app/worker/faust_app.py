"""The Faust application object and its topics, configured from FRAUD_* settings."""

from __future__ import annotations

import gc
import logging
import sys
from typing import Any

import faust

from app.delivery.backoff import Retry
from app.detection.rulebook import rulebook
from app.rules_admin.topic import bootstrap_servers
from app.worker import collector
from app.worker.failures import failures
from app.worker.kafka_security import faust_credentials
from app.worker.partition_check import (
    DEFAULT_PARTITIONS,
    PartitionMismatch,
    RetentionTooShort,
    check_retentions,
    existing_partition_counts,
    plan_partitions,
    topic_retentions,
)
from app.worker.settings import Settings, SettingsError, load_settings, state_retention_ms
from app.worker.stats import stats
from app.worker.transport import PRODUCE_BATCH_BYTES, BatchHandler, Transport

log = logging.getLogger(__name__)


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        # Fail at start-up, naming the variable, rather than half-start a worker.
        print(f"fraud-detection: bad setting: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


settings = _settings_or_exit()
rulebook.max_rules = settings.max_rules
rulebook.max_rule_bytes = settings.max_rule_bytes
rulebook.state_retention_ms = state_retention_ms(settings)
rulebook.allowed_lateness_ms = int(settings.allowed_lateness_s * 1000)
failures.max_internal_errors_per_minute = settings.max_internal_errors_per_minute
# Until the topics have been asked (FraudApp.on_first_start), the configured count.
PARTITIONS = settings.partitions or DEFAULT_PARTITIONS


class FraudApp(faust.App):
    """Faust's App, checking the partition counts before anything is consumed."""

    fetch_max_wait_ms: int = 1500  # Faust's own value until the settings say otherwise
    fetch_min_bytes: int = 1  # aiokafka's

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Topics whose fetched records go to a handler a partition batch at a time,
        # instead of through Faust's per-message path (app.worker.transport).
        self.batch_handlers: dict[str, BatchHandler] = {}

    def _new_transport(self) -> Any:
        # Faust's aiokafka transport with the fetch wait as a setting (app.worker.transport).
        return Transport(self.conf.broker_consumer, self)

    async def _on_agent_error(self, agent: Any, exc: BaseException) -> None:
        # Faust's hook for an exception that escaped an agent. Ours catch everything, so
        # this means a bug; /healthz fails for a while (app.worker.failures) and it is logged.
        failures.agent_crashed(str(getattr(agent, "name", agent)), exc)
        await super()._on_agent_error(agent, exc)

    async def on_first_start(self) -> None:
        await super().on_first_start()
        await self.settle_partitions()

    async def settle_partitions(self) -> None:
        bootstrap = bootstrap_servers(settings.broker)
        changelogs = [t.changelog_topic.get_topic_name() for t in self.tables.values()]
        co_partitioned = [regroup_topic.get_topic_name(), *changelogs]
        retry = Retry(f"cannot read topic metadata from {bootstrap}", base=0.5, cap=5.0, log=log)
        existing = await retry.run(
            lambda: existing_partition_counts(bootstrap, [settings.topic_payments, *co_partitioned])
        )
        try:
            plan = plan_partitions(
                settings.partitions, settings.topic_payments, co_partitioned, existing
            )
        except PartitionMismatch as exc:
            # One line, then stop: a worker on mismatched partitions would crash-loop
            # past payments while looking alive.
            log.critical("fraud-detection: refusing to start: %s", exc)
            print(f"fraud-detection: refusing to start: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        # The state changelogs (those with a retention of their own) must keep it.
        stateful = [
            t.changelog_topic.get_topic_name()
            for t in self.tables.values()
            if "retention.ms" in t.extra_topic_configs
        ]
        retentions = await retry.run(lambda: topic_retentions(bootstrap, stateful))
        try:
            check_retentions(retentions, state_retention_ms(settings))
        except RetentionTooShort as exc:
            log.critical("fraud-detection: refusing to start: %s", exc)
            print(f"fraud-detection: refusing to start: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        log.info("using %d partitions, from %s", plan.partitions, plan.source)
        self.conf.topic_partitions = plan.partitions
        for topic in (payments_topic, alerts_topic, dlq_topic, regroup_topic):
            topic.partitions = plan.partitions
        for table in self.tables.values():
            table.partitions = plan.partitions
            table.changelog_topic.partitions = plan.partitions


app = FraudApp(
    settings.app_id,
    broker=settings.broker,
    broker_credentials=faust_credentials(settings),
    # Faust's stores and tables with the batch path's reads and writes (tables.store).
    # (registered under these names in setup.cfg's faust.stores entry points).
    store=f"state-{settings.store}",
    Table="tables.store:StateTable",
    datadir=str(settings.datadir),
    topic_partitions=PARTITIONS,
    topic_replication_factor=settings.topic_replication,
    processing_guarantee=settings.processing_guarantee,
    web_bind=settings.web_bind,
    web_port=settings.web_port,
    web_host=settings.web_host
    or (settings.web_bind if settings.web_bind != "0.0.0.0" else "127.0.0.1"),
    key_serializer="raw",
    value_serializer="raw",
    consumer_auto_offset_reset="earliest",
    # Alerts and DLQ records are sent (and alerts awaited) inside the agent;
    # a short commit interval keeps the replay after a crash small.
    broker_commit_interval=1.0,
    # A dead worker's partitions move once its session times out: 6 s is the broker's
    # smallest allowed (group.min.session.timeout.ms). Faust runs the consumer, and so its
    # heartbeats, in a thread of its own, so a busy event loop does not miss them.
    broker_session_timeout=6.0,
    broker_heartbeat_interval=1.0,
    producer_acks=-1,
    # Changelog writes, forwarded payments and DLQ records batch for up to 5 ms.
    producer_linger_ms=5,
    # A decided batch's records of one partition go out as one produce batch
    # (app.worker.transport.Producer.send_batches).
    producer_max_batch_size=PRODUCE_BATCH_BYTES,
    stream_wait_empty=False,
    # The most records one fetch hands over, so a batch (agents.batch) stays bounded.
    broker_max_poll_records=2000,
    table_cleanup_interval=30.0,
    # Faust's own /router/ and /table/ views are unauthenticated and would answer on any
    # bind address; the project's views (/cards, /rules, ...) replace them.
    web_router_enabled=False,
    web_tables_enabled=False,
    web_graph_enabled=False,
    web_stats_enabled=False,
    origin="app",
)
app.fetch_max_wait_ms = settings.fetch_max_wait_ms
app.fetch_min_bytes = settings.fetch_min_bytes

payments_topic = app.topic(settings.topic_payments, partitions=PARTITIONS)
alerts_topic = app.topic(settings.topic_alerts, partitions=PARTITIONS)
dlq_topic = app.topic(settings.topic_dlq, partitions=PARTITIONS)
# Payments re-keyed for rules grouped by something other than the card.
regroup_topic = app.topic(
    f"{settings.app_id}-payments-by-group", partitions=PARTITIONS, internal=True
)


@app.task  # type: ignore[untyped-decorator]
async def freeze_startup_objects() -> None:
    """Leave the objects made at start-up (Faust, aiokafka, pycountry's tables: ~100 000)
    out of every later garbage collection: a full collection walked them all, ~70 ms
    on this machine, in the middle of whichever batch it hit. ``gc.freeze`` is CPython's
    tool for exactly this; the pauses that remain are in ``/stats`` (``gc``). Then the
    collector waits for batches to come and go (``app.worker.collector``)."""
    gc.callbacks.append(stats.gc_pauses)
    gc.collect()
    gc.freeze()
    collector.tune()


@app.task  # type: ignore[untyped-decorator]
async def keep_root_logger_at_its_level() -> None:
    """Undo Faust's spinner trick: with ``-l warn`` or above the worker sets the root
    logger to DEBUG so that every record spins its console spinner; every library
    ``log.debug`` (aiokafka logs each send) then builds a LogRecord. Profiled: 5 % of
    the worker's CPU. The configured handler keeps its level, so output is unchanged."""
    root = logging.getLogger()
    level = configured_log_level()
    if root.level < level:
        root.setLevel(level)


def configured_log_level() -> int:
    """The level of the worker's configured log handler (``-l``), Faust's spinner aside:
    what the root logger keeps (above), and what the archive's process logs at."""
    root = logging.getLogger()
    levels = [h.level for h in root.handlers if type(h).__name__ != "SpinnerHandler" and h.level]
    return min(levels) if levels else root.getEffectiveLevel()

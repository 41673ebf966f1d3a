"""Prometheus exposition of the worker's counters, built at scrape time.

The agent only bumps plain counters in :data:`app.worker.stats.stats`; nothing here
runs on its hot path. A dedicated :class:`CollectorRegistry` holds custom
collectors that read those counters (and the rulebook, the consumer and the
sink's counters) when Prometheus scrapes, so no ``prometheus_client`` metric
object is touched per payment.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from hdrh.histogram import HdrHistogram
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector

from app.delivery.alert_writer import sink_stats
from app.detection.rules import Rule
from app.web.consumer import PartitionLag
from app.worker.failures import Failures
from app.worker.failures import failures as default_failures
from app.worker.stats import WorkerStats

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Upper bounds (seconds) of the latency histograms' Prometheus buckets. The counts
# behind them come from the HdrHistograms, so these only choose the resolution of
# the exported view, not of what is recorded.
LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


def hdr_buckets(
    histogram: HdrHistogram, bounds_s: Sequence[float] = LATENCY_BUCKETS_S
) -> tuple[list[tuple[str, float]], float]:
    """Cumulative Prometheus buckets and the sum (seconds) of a histogram recorded in µs.

    A bucket ``le=b`` counts the HdrHistogram buckets up to the one holding ``b``,
    so it is exact to the histogram's 3 significant digits. The sum is estimated
    from the middle of each bucket (HdrHistogram keeps no exact sum).
    """
    counts = list(histogram.counts)  # one C-level copy: ~0.3 ms for 21k buckets
    last = len(counts) - 1
    total = histogram.get_total_count()
    buckets: list[tuple[str, float]] = []
    for bound in bounds_s:
        bound_us = int(bound * 1_000_000)
        index = min(histogram.get_counts_array_index(bound_us), last)
        buckets.append((_le(bound), float(sum(counts[: index + 1]))))
    buckets.append(("+Inf", float(total)))
    sum_us = 0.0
    for index, count in enumerate(counts):
        if count:
            lowest = histogram.get_value_from_index(index)
            middle = (lowest + histogram.get_highest_equivalent_value(lowest)) / 2
            sum_us += count * middle
    return buckets, sum_us / 1_000_000


def _le(bound: float) -> str:
    return repr(float(bound))


def _sink_stats() -> Any | None:
    """The sink's counters, if this worker runs the sink (it is optional)."""
    return sink_stats if sink_stats.enabled else None


def sink_snapshot() -> dict[str, Any] | None:
    found = _sink_stats()
    if found is None or not callable(getattr(found, "snapshot", None)):
        return None
    try:
        snapshot = found.snapshot()
    except Exception:
        log.warning("sink_stats.snapshot() failed", exc_info=True)
        return None
    return snapshot if isinstance(snapshot, dict) else None


# Sink counters that only grow, exported as Prometheus counters (``_total``).
_SINK_COUNTERS = {
    "written": "Alert rows created in DynamoDB by this worker.",
    "duplicates_skipped": "Alerts whose row already existed (replays).",
    "failures": "Failed DynamoDB writes (each is retried).",
    "throttled": "Failed DynamoDB writes that were throttling.",
    "retries": "Retry rounds of the sink.",
    "dead_lettered": "Undecodable alert records sent to the DLQ by the sink.",
    "batches": "Batches written by the sink.",
    "cases_opened": "Alerts that opened a case (the ones that page).",
    "cases_joined": "Alerts that joined an open case of their rule and key (no page).",
}


@dataclass
class Sources:
    """Where the collector reads from; the worker uses the real ones, tests pass fakes."""

    stats: WorkerStats
    rules: Callable[[], list[Rule]]
    lag: Callable[[], list[PartitionLag]]
    sink_topic: str | None = None  # the topic the sink consumes: its consumer lag is sink lag
    sink: Callable[[], Any | None] = _sink_stats
    failures: Failures = field(default_factory=lambda: default_failures)


class WorkerCollector:
    """Builds every metric family from :class:`Sources` at scrape time."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def collect(self) -> Iterable[Metric]:
        stats = self.sources.stats
        yield _counter(
            "fraud_payments_processed", "Payments decided (rules evaluated).", stats.processed
        )
        yield _counter(
            "fraud_payments_duplicate", "Redelivered payments (same txn_id).", stats.duplicates
        )
        yield _counter(
            "fraud_payments_late", "Payments too late for their card's clock.", stats.late
        )

        yield _counter(
            "fraud_key_events_evicted",
            "Events forgotten by keys at their bound (FRAUD_MAX_KEY_EVENTS); a key that"
            " reaches it may miss a burst among what it forgot.",
            stats.key_events_evicted,
        )
        yield _counter(
            "fraud_state_keys_swept",
            "Keys the local state stores forgot, not written for the state retention (as"
            " their changelogs forget them).",
            stats.state_keys_swept,
        )
        yield _counter(
            "fraud_payments_rekeyed",
            "Payments whose Kafka key was not their card id, re-keyed by card.",
            stats.rekeyed,
        )
        yield _counter(
            "fraud_dlq_send_failures",
            "Dead letters Kafka refused after the producer's own retries (logged).",
            self.sources.failures.dlq_send_failures,
        )
        internal = CounterMetricFamily(
            "fraud_internal_errors",
            "Records dead-lettered as internal_error, by agent and exception class.",
            labels=["agent", "error"],
        )
        for (agent, error), count in sorted(self.sources.failures.internal_errors.items()):
            internal.add_metric([agent, error], count)
        yield internal
        crashes = CounterMetricFamily(
            "fraud_agent_crashes",
            "Exceptions that escaped an agent (Faust restarted it past a record).",
            labels=["agent"],
        )
        for agent, count in sorted(self.sources.failures.crashes.items()):
            crashes.add_metric([agent], count)
        yield crashes

        dlq = CounterMetricFamily(
            "fraud_dlq_records",
            "Records sent to the dead-letter topic, by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(stats.dlq.items()):
            dlq.add_metric([reason], count)
        yield dlq

        alerts = CounterMetricFamily(
            "fraud_alerts",
            "Alerts acknowledged by Kafka, by rule and status.",
            labels=["rule_id", "status"],
        )
        for (rule_id, status), count in sorted(stats.alerts.items()):
            alerts.add_metric([rule_id, status], count)
        yield alerts

        buckets, total_s = hdr_buckets(stats.decision_latency)
        yield HistogramMetricFamily(
            "fraud_decision_latency_seconds",
            "Kafka produce timestamp of a payment to its rules evaluated.",
            buckets=buckets,
            sum_value=total_s,
        )

        yield from self._rules()
        lags = self.sources.lag()
        yield from self._lag(lags)
        yield from self._sink(lags)

    def _rules(self) -> Iterator[Metric]:
        rules = self.sources.rules()
        version = GaugeMetricFamily(
            "fraud_rule_version",
            "Version of each rule in force in this worker (status as a label).",
            labels=["rule_id", "status"],
        )
        for rule in rules:
            version.add_metric([rule.rule_id, rule.status], rule.version)
        yield version
        yield GaugeMetricFamily("fraud_rules_loaded", "Rules in force in this worker.", len(rules))

    def _lag(self, lags: Sequence[PartitionLag]) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "fraud_consumer_lag_records",
            "Records in an assigned partition not yet committed (highwater - committed).",
            labels=["topic", "partition"],
        )
        for item in lags:
            if item.lag is not None:
                lag.add_metric([item.topic, str(item.partition)], item.lag)
        yield lag

    def _sink(self, lags: Sequence[PartitionLag]) -> Iterator[Metric]:
        found = self.sources.sink()
        snapshot = None
        if found is not None and callable(getattr(found, "snapshot", None)):
            try:
                snapshot = found.snapshot()
            except Exception:
                log.warning("sink_stats.snapshot() failed; sink metrics skipped", exc_info=True)
        if not isinstance(snapshot, dict):
            return
        if self.sources.sink_topic is not None:
            yield GaugeMetricFamily(
                "fraud_sink_lag_records",
                "Alerts on this worker's partitions of the alerts topic not yet sunk.",
                sum(i.lag or 0 for i in lags if i.topic == self.sources.sink_topic),
            )
        for key, doc in _SINK_COUNTERS.items():
            value = snapshot.get(key)
            if _number(value):
                yield _counter(f"fraud_sink_{key}", doc, value)
        if _number(snapshot.get("failing_for_s")):
            yield GaugeMetricFamily(
                "fraud_sink_failing_seconds",
                "How long the oldest unwritten alert has been failing (0 when none).",
                snapshot["failing_for_s"],
            )
        if isinstance(snapshot.get("healthy"), bool):
            yield GaugeMetricFamily(
                "fraud_sink_healthy", "1 when the sink is keeping up.", int(snapshot["healthy"])
            )
        latency = getattr(found, "alert_latency", None)
        if isinstance(latency, HdrHistogram):
            buckets, total_s = hdr_buckets(latency)
            yield HistogramMetricFamily(
                "fraud_alert_latency_seconds",
                "Kafka produce timestamp of the triggering payment to the alert row existing.",
                buckets=buckets,
                sum_value=total_s,
            )


def _number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def new_registry(sources: Sources, process: bool = True) -> CollectorRegistry:
    """A registry of its own: nothing else in the process registers into it."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(sources))
    if process:
        # CPU, memory and open files of the worker process, read from /proc at scrape.
        ProcessCollector(namespace="fraud_worker", registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    started = time.perf_counter()
    body = generate_latest(registry)
    log.debug("metrics rendered in %.1f ms", (time.perf_counter() - started) * 1000)
    return body

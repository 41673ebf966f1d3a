"""app/web/metrics.py: the Prometheus collectors read the worker's counters at scrape time."""

from __future__ import annotations

import random
import re
from collections import Counter
from types import SimpleNamespace

import pytest
from hdrh.histogram import HdrHistogram

from app.detection.rules import SEED_RULE, parse_rule
from app.web import (
    metrics,
)
from app.web.consumer import PartitionLag
from app.web.metrics import Sources, hdr_buckets, new_registry
from app.worker.failures import Failures
from app.worker.stats import WorkerStats, new_histogram
from tests.docs import page
from tests.unit.web.fakes import FakeSink, families, recorded_stats, samples


def test_metrics_counters_match_what_was_recorded() -> None:
    stats = recorded_stats()
    shadow = parse_rule({**SEED_RULE.to_json(), "rule_id": "night-owl", "status": "shadow"})
    lags = [
        PartitionLag("payments.raw", 0, 50, 40, 44, 10),
        PartitionLag("fraud.alerts", 0, 9, 6, 7, 3),
    ]
    registry = new_registry(
        Sources(
            stats=stats,
            rules=lambda: [SEED_RULE, shadow],
            lag=lambda: lags,
            sink_topic="fraud.alerts",
            sink=FakeSink,
        )
    )
    found = families(metrics.exposition(registry).decode())

    assert samples(found["fraud_payments_processed"]) == {
        ("fraud_payments_processed_total", ()): 1234
    }
    assert samples(found["fraud_payments_duplicate"]) == {("fraud_payments_duplicate_total", ()): 5}
    assert samples(found["fraud_payments_late"]) == {("fraud_payments_late_total", ()): 3}
    assert samples(found["fraud_dlq_records"]) == {
        ("fraud_dlq_records_total", (("reason", "late_event"),)): 3,
        ("fraud_dlq_records_total", (("reason", "missing_field"),)): 4,
    }
    assert samples(found["fraud_alerts"]) == {
        ("fraud_alerts_total", (("rule_id", "high-value-burst"), ("status", "active"))): 7,
        ("fraud_alerts_total", (("rule_id", "night-owl"), ("status", "shadow"))): 2,
    }
    assert samples(found["fraud_rule_version"]) == {
        ("fraud_rule_version", (("rule_id", "high-value-burst"), ("status", "active"))): 1,
        ("fraud_rule_version", (("rule_id", "night-owl"), ("status", "shadow"))): 1,
    }
    assert samples(found["fraud_consumer_lag_records"]) == {
        ("fraud_consumer_lag_records", (("partition", "0"), ("topic", "fraud.alerts"))): 3,
        ("fraud_consumer_lag_records", (("partition", "0"), ("topic", "payments.raw"))): 10,
    }

    latency = samples(found["fraud_decision_latency_seconds"])
    bucket = {
        dict(labels)["le"]: v for (name, labels), v in latency.items() if name.endswith("_bucket")
    }
    assert bucket["0.001"] == 10 and bucket["0.005"] == 40 and bucket["0.1"] == 90
    assert bucket["2.5"] == 90 and bucket["5.0"] == 100 and bucket["+Inf"] == 100
    assert latency[("fraud_decision_latency_seconds_count", ())] == 100
    exact_sum = (10 * 800 + 30 * 4_000 + 50 * 70_000 + 10 * 3_000_000) / 1e6
    assert latency[("fraud_decision_latency_seconds_sum", ())] == pytest.approx(exact_sum, rel=1e-3)

    assert samples(found["fraud_sink_written"]) == {("fraud_sink_written_total", ()): 7}
    assert samples(found["fraud_sink_failures"]) == {("fraud_sink_failures_total", ()): 2}
    assert samples(found["fraud_sink_lag_records"]) == {("fraud_sink_lag_records", ()): 3}
    assert samples(found["fraud_sink_healthy"]) == {("fraud_sink_healthy", ()): 0}
    assert samples(found["fraud_sink_failing_seconds"]) == {
        ("fraud_sink_failing_seconds", ()): 12.5
    }
    assert (
        samples(found["fraud_alert_latency_seconds"])[("fraud_alert_latency_seconds_count", ())]
        == 2
    )


def test_metrics_skip_the_sink_when_there_is_none() -> None:
    registry = new_registry(
        Sources(stats=WorkerStats(), rules=list, lag=list, sink=lambda: None), process=False
    )
    names = set(families(metrics.exposition(registry).decode()))
    assert "fraud_payments_processed" in names
    assert not any(name.startswith(("fraud_sink", "fraud_alert_latency")) for name in names)
    broken = SimpleNamespace(snapshot=lambda: 1 / 0)
    registry = new_registry(
        Sources(stats=WorkerStats(), rules=list, lag=list, sink=lambda: broken), process=False
    )
    assert not any(
        n.startswith("fraud_sink") for n in families(metrics.exposition(registry).decode())
    )


def test_hdr_buckets_are_cumulative_and_end_with_the_total() -> None:
    histogram: HdrHistogram = new_histogram()
    rng = random.Random(3)
    values = [rng.randint(1, 90_000_000) for _ in range(2000)]
    for value in values:
        histogram.record_value(value)
    buckets, _ = hdr_buckets(histogram)
    counts = [count for _, count in buckets]
    assert counts == sorted(counts) and buckets[-1] == ("+Inf", 2000.0)
    for le, count in buckets[:-1]:
        exact = sum(1 for v in values if v <= float(le) * 1_000_000)
        assert abs(count - exact) <= max(2, exact * 0.002), le  # 3 significant digits


def catalogue_rows() -> dict[str, tuple[str, tuple[str, ...]]]:
    """The metrics page's rows: exposed name -> (type, label names)."""
    rows: dict[str, tuple[str, tuple[str, ...]]] = {}
    for line in page("operations/metrics.md").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 4:
            (name,) = re.findall(r"`([^`]+)`", cells[0])
            assert name not in rows, f"{name} is listed twice"
            rows[name] = (cells[1], tuple(re.findall(r"`([^`]+)`", cells[2])))
    return rows


def test_the_metrics_page_lists_every_metric_the_worker_exposes() -> None:
    """Every family a fully busy worker yields (sink, rules, lag, failures, process), under
    the name a query uses, with its type and labels: the page cannot drift from the code."""
    failures = Failures(
        internal_errors=Counter({("detect", "KeyError"): 1}), crashes=Counter({"detect": 1})
    )
    snapshot = {key: 1 for key in metrics._SINK_COUNTERS} | {"failing_for_s": 0, "healthy": True}
    sink = SimpleNamespace(snapshot=lambda: snapshot, alert_latency=new_histogram())
    registry = new_registry(
        Sources(
            stats=recorded_stats(),
            rules=lambda: [SEED_RULE],
            lag=lambda: [PartitionLag("fraud.alerts", 0, 9, 6, 7, 3)],
            sink_topic="fraud.alerts",
            sink=lambda: sink,
            failures=failures,
        )
    )
    exposed: dict[str, tuple[str, tuple[str, ...]]] = {}
    for family in registry.collect():
        labels = {
            name
            for sample in family.samples
            for name in sample.labels
            if name != "le"  # a histogram's bucket bound, not a label of its own
        }
        name = f"{family.name}_total" if family.type == "counter" else family.name
        exposed[name] = (family.type, tuple(sorted(labels)))
    listed = {
        name: (kind, tuple(sorted(labels))) for name, (kind, labels) in catalogue_rows().items()
    }
    assert listed == exposed

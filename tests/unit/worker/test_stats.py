"""app/worker/stats.py: per-second history and latency percentiles."""

from __future__ import annotations

import random

import pytest

from app.worker.stats import WorkerStats, new_histogram, percentiles_ms


def test_tick_gives_each_second_its_own_latency_percentiles() -> None:
    stats = WorkerStats(started_at=100.0)
    first = [random.Random(1).randint(500, 50_000) for _ in range(999)]
    for value in first:
        stats.decision_latency.record_value(value)
    stats.processed = len(first)
    sample = stats.tick(now=101.0)
    reference = new_histogram()
    for value in first:
        reference.record_value(value)
    assert sample.processed == 999 and sample.rate == pytest.approx(999.0)
    assert sample.p50_ms == reference.get_value_at_percentile(50) / 1000
    assert sample.p99_ms == reference.get_value_at_percentile(99) / 1000
    assert sample.max_ms == reference.get_max_value() / 1000

    second = [200_000, 210_000, 220_000]
    for value in second:
        stats.decision_latency.record_value(value)
    stats.processed += 3
    sample = stats.tick(now=103.0)
    only_second = new_histogram()
    for value in second:
        only_second.record_value(value)
    assert sample.processed == 3 and sample.rate == pytest.approx(1.5)
    assert sample.p50_ms == only_second.get_value_at_percentile(50) / 1000
    assert sample.max_ms == only_second.get_max_value() / 1000

    idle = stats.tick(now=104.0)
    assert idle.processed == 0 and idle.p50_ms is None and idle.p99_ms is None
    assert [s.t for s in stats.history] == [101.0, 103.0, 104.0]
    assert stats.throughput(2) == pytest.approx(1.0)

    # An idle second skips the histogram; the second after it still has only its own.
    stats.decision_latency.record_value(7_000)
    stats.processed += 1
    after_idle = stats.tick(now=105.0)
    assert after_idle.processed == 1
    assert after_idle.p50_ms == after_idle.max_ms == new_histogram_value_ms(7_000)


def new_histogram_value_ms(value_us: int) -> float:
    histogram = new_histogram()
    histogram.record_value(value_us)
    return float(histogram.get_value_at_percentile(50)) / 1000


def test_percentiles_agree_with_hdrh_and_batched_decisions_with_single_ones() -> None:
    rng = random.Random(7)
    produced = [rng.randint(1_000_000, 1_000_400) for _ in range(5_000)]
    batched, single = WorkerStats(), new_histogram()
    batched.record_decisions(produced, 1_000_500.25)
    for produced_ms in produced:
        single.record_value(int((1_000_500.25 - produced_ms) * 1000))
    assert list(batched.decision_latency.counts) == list(single.counts)
    assert percentiles_ms(single) == {
        "count": 5_000,
        "p50": single.get_value_at_percentile(50) / 1000,
        "p90": single.get_value_at_percentile(90) / 1000,
        "p99": single.get_value_at_percentile(99) / 1000,
        "max": single.get_max_value() / 1000,
    }
    assert percentiles_ms(new_histogram())["count"] == 0

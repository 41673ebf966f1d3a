"""In-process counters and the decision-latency histogram of one worker."""

from __future__ import annotations

import operator
import time
from bisect import bisect_left
from collections import Counter, deque
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from hdrh.histogram import HdrHistogram

# 1 µs .. 10 min at 3 significant digits: a few hundred KiB, constant.
_LOWEST_US, _HIGHEST_US, _DIGITS = 1, 600_000_000, 3


def new_histogram() -> HdrHistogram:
    return HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)


def counts_of(histogram: HdrHistogram) -> list[int]:
    """The histogram's bucket counts. Read through a memoryview: iterating its ctypes array
    costs ~3 ms for 21k buckets, this ~0.1 ms."""
    view = memoryview(histogram.counts)
    if view.itemsize != 8:  # hdrh's counts are C unsigned longs: 64-bit on Linux
        return list(histogram.counts)
    return view.cast("B").cast("Q").tolist()


def percentiles_ms(histogram: HdrHistogram) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds of a histogram recorded in microseconds.

    ``/stats`` (polled by the dashboard and the bench) asks for this: hdrh's own
    ``get_value_at_percentile`` walks the buckets in Python, ~4 ms per call on a worker
    that has decided a few hundred thousand payments.
    """
    found = interval_percentiles(histogram, counts_of(histogram), (50.0, 90.0, 99.0))
    if found is None:
        return {"count": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    (p50, p90, p99), highest = found
    return {
        "count": histogram.get_total_count(),
        "p50": p50,
        "p90": p90,
        "p99": p99,
        "max": highest,
    }


# Seconds of per-second history kept for /stats and the dashboard's charts.
HISTORY_SECONDS = 600


@dataclass(frozen=True, slots=True)
class Sample:
    """What one worker did in one sampling interval (about a second)."""

    t: float  # wall-clock end of the interval, epoch seconds
    seconds: float  # length of the interval
    processed: int  # payments decided in the interval
    rate: float  # processed per second
    alerts: int  # alerts acknowledged by Kafka in the interval
    dlq: int  # records dead-lettered in the interval
    p50_ms: float | None  # decision latency of the interval's payments (None: there were none)
    p99_ms: float | None
    max_ms: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "t": round(self.t, 3),
            "seconds": round(self.seconds, 3),
            "processed": self.processed,
            "rate": round(self.rate, 1),
            "alerts": self.alerts,
            "dlq": self.dlq,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
        }


def interval_percentiles(
    histogram: HdrHistogram, counts: list[int], percentiles: tuple[float, ...]
) -> tuple[list[float], float] | None:
    """Percentiles (ms) and max (ms) of ``counts``, a counts array laid out like ``histogram``'s.

    Same conventions as ``HdrHistogram.get_value_at_percentile`` (target count rounded
    half up, highest equivalent value of the bucket), so a per-second view agrees with
    what a fresh histogram of that second would say. ``None`` when ``counts`` is empty.
    """
    cumulative = list(accumulate(counts))  # C speed, ~0.3 ms for 21k buckets
    total = cumulative[-1] if cumulative else 0
    if total <= 0:
        return None

    def value_ms(index: int) -> float:
        value = histogram.get_highest_equivalent_value(histogram.get_value_from_index(index))
        return float(value) / 1000

    values = []
    for percentile in percentiles:
        target = max(1, int(min(percentile, 100.0) / 100 * total + 0.5))
        values.append(value_ms(bisect_left(cumulative, target)))
    return values, value_ms(bisect_left(cumulative, total))


@dataclass
class GcPauses:
    """How long the garbage collector stopped the worker, per generation: a full collection
    walks every tracked object and holds up every batch meanwhile. Registered in
    ``gc.callbacks`` by the worker (``app.worker.faust_app``)."""

    collections: list[int] = field(default_factory=lambda: [0, 0, 0])
    total_ms: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    longest_ms: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    _started: float = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = info["generation"]
        pause_ms = (time.perf_counter() - self._started) * 1000
        self.collections[generation] += 1
        self.total_ms[generation] += pause_ms
        self.longest_ms[generation] = max(self.longest_ms[generation], pause_ms)

    def to_json(self) -> dict[str, Any]:
        return {
            "collections": list(self.collections),
            "total_ms": [round(ms, 1) for ms in self.total_ms],
            "longest_ms": [round(ms, 2) for ms in self.longest_ms],
        }


@dataclass
class WorkerStats:
    started_at: float = field(default_factory=time.time)
    processed: int = 0
    grouped_processed: int = 0
    alert_send_failures: int = 0
    alerts_already_published: int = 0  # replayed alerts found on the topic, not re-sent
    # Payments whose Kafka key was not their card id, re-keyed through the repartition topic.
    rekeyed: int = 0
    rules_follower_failing_since: float | None = None  # monotonic; None while it follows
    archived_rows: int = 0  # rows written to the Parquet archive (agents.archive)
    archived_files: int = 0
    archive_failing_since: float | None = None  # monotonic; None while it archives
    archive_turns: int = 0  # its consumer's rounds done (the archive's process reports them)
    duplicates: int = 0
    late: int = 0
    # Events keys forgot at FRAUD_MAX_KEY_EVENTS (app.detection.engine._bound).
    key_events_evicted: int = 0
    # Keys the local stores forgot as their changelogs' retention does (tables.sweep).
    state_keys_swept: int = 0
    dlq: Counter[str] = field(default_factory=Counter)
    alerts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (rule_id, status)
    decision_latency: HdrHistogram = field(default_factory=new_histogram)
    gc_pauses: GcPauses = field(default_factory=GcPauses)
    # The newest alerts this worker emitted (bounded), for /alerts and the dashboard.
    recent_alerts: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=500))
    # One Sample per tick() (the web module ticks every second), newest last.
    history: deque[Sample] = field(default_factory=lambda: deque(maxlen=HISTORY_SECONDS))
    # What the previous tick saw: (time, processed, alerts, dlq) and the latency counts.
    _tick_totals: tuple[float, int, int, int] | None = field(default=None, repr=False)
    _tick_counts: list[int] | None = field(default=None, repr=False)
    _tick_recorded: int = field(default=0, repr=False)  # the histogram's count at _tick_counts

    def record_decisions(self, produced_at_ms: list[int], now_ms: float) -> None:
        """Decision latencies of payments decided together at ``now_ms``. A batch's produce
        timestamps (ms) repeat, so each distinct latency is recorded once with its count:
        hdrh records in Python, ~1.5 µs a call."""
        latencies = Counter(produced_at_ms)
        record = self.decision_latency.record_value
        for produced, count in latencies.items():
            latency_us = max(1, int((now_ms - produced) * 1000))
            record(min(latency_us, _HIGHEST_US), count)

    def tick(self, now: float | None = None) -> Sample:
        """Close the current sampling interval and append its Sample to ``history``.

        Per-second latency comes from the difference between two copies of the
        cumulative histogram's counts, so the agent's hot path records into one
        histogram only and pays nothing for the charts (a tick costs ~2 ms).
        """
        now = time.time() if now is None else now
        alerts, dlq = sum(self.alerts.values()), sum(self.dlq.values())
        previous = self._tick_totals or (self.started_at, 0, 0, 0)
        recorded = self.decision_latency.get_total_count()
        found: tuple[list[float], float] | None = None
        if recorded != self._tick_recorded:
            counts = counts_of(self.decision_latency)
            delta = (
                counts
                if self._tick_counts is None
                else list(map(operator.sub, counts, self._tick_counts))
            )
            self._tick_counts, self._tick_recorded = counts, recorded
            found = interval_percentiles(self.decision_latency, delta, (50.0, 99.0))
        # else nothing was decided since the last tick: no latency, and no copy of the
        # histogram's 21k buckets to learn that (most of an idle worker's second tick).
        self._tick_totals = (now, self.processed, alerts, dlq)
        seconds = max(now - previous[0], 1e-6)
        processed = self.processed - previous[1]
        sample = Sample(
            t=now,
            seconds=seconds,
            processed=processed,
            rate=processed / seconds,
            alerts=alerts - previous[2],
            dlq=dlq - previous[3],
            p50_ms=None if found is None else found[0][0],
            p99_ms=None if found is None else found[0][1],
            max_ms=None if found is None else found[1],
        )
        self.history.append(sample)
        return sample

    def throughput(self, samples: int) -> float:
        """Mean payments per second over the newest ``samples`` samples of history."""
        recent = list(self.history)[-samples:] if samples > 0 else []
        span = sum(s.seconds for s in recent)
        return sum(s.processed for s in recent) / span if span > 0 else 0.0

    def snapshot(self) -> dict[str, Any]:
        return {
            "uptime_s": round(time.time() - self.started_at, 3),
            "processed": self.processed,
            "grouped_processed": self.grouped_processed,
            "duplicates": self.duplicates,
            "late": self.late,
            "key_events_evicted": self.key_events_evicted,
            "state_keys_swept": self.state_keys_swept,
            "rekeyed": self.rekeyed,
            "dlq": dict(self.dlq),
            "dlq_total": sum(self.dlq.values()),
            "alerts": {f"{rule}/{status}": n for (rule, status), n in self.alerts.items()},
            "decision_latency_ms": percentiles_ms(self.decision_latency),
            "decision_latency_hdr": self.decision_latency.encode().decode(),
            "gc": self.gc_pauses.to_json(),
        }


stats = WorkerStats()

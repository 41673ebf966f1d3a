"""In-process counters and the decision-latency histogram of one worker."""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

# 1 µs .. 10 min at 3 significant digits: a few hundred KiB, constant.
_LOWEST_US, _HIGHEST_US, _DIGITS = 1, 600_000_000, 3


def new_histogram() -> HdrHistogram:
    return HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)


def percentiles_ms(histogram: HdrHistogram) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds of a histogram recorded in microseconds."""
    if histogram.get_total_count() == 0:
        return {"count": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    return {
        "count": histogram.get_total_count(),
        "p50": histogram.get_value_at_percentile(50) / 1000,
        "p90": histogram.get_value_at_percentile(90) / 1000,
        "p99": histogram.get_value_at_percentile(99) / 1000,
        "max": histogram.get_max_value() / 1000,
    }


@dataclass
class WorkerStats:
    started_at: float = field(default_factory=time.time)
    processed: int = 0
    grouped_processed: int = 0
    duplicates: int = 0
    late: int = 0
    dlq: Counter[str] = field(default_factory=Counter)
    alerts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (rule_id, status)
    decision_latency: HdrHistogram = field(default_factory=new_histogram)
    # The newest alerts this worker emitted (bounded), for /alerts and the dashboard.
    recent_alerts: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=500))

    def record_decision(self, produced_at_ms: int, now_ms: float) -> None:
        latency_us = max(1, int((now_ms - produced_at_ms) * 1000))
        self.decision_latency.record_value(min(latency_us, _HIGHEST_US))

    def snapshot(self) -> dict[str, Any]:
        return {
            "uptime_s": round(time.time() - self.started_at, 3),
            "processed": self.processed,
            "duplicates": self.duplicates,
            "late": self.late,
            "dlq": dict(self.dlq),
            "dlq_total": sum(self.dlq.values()),
            "alerts": {f"{rule}/{status}": n for (rule, status), n in self.alerts.items()},
            "decision_latency_ms": percentiles_ms(self.decision_latency),
            "decision_latency_hdr": self.decision_latency.encode().decode(),
        }


stats = WorkerStats()

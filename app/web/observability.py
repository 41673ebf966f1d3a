"""GET /stats (JSON for the dashboard) and GET /metrics (Prometheus text)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from faust.web import Request, Response, View

from app.detection.rulebook import rulebook
from app.web.cluster import my_url
from app.web.consumer import consumer_lag
from app.web.health import broker_offsets
from app.web.metrics import CONTENT_TYPE, Sources, exposition, new_registry, sink_snapshot
from app.web.params import BadParameter, bad_request, only, parse_int
from app.worker.faust_app import alerts_topic, app
from app.worker.stats import HISTORY_SECONDS, stats

HISTORY_DEFAULT = 60


def _assignment() -> dict[str, dict[str, list[int]]]:
    def grouped(tps: Iterable[Any]) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for tp in sorted(tps):
            out.setdefault(tp.topic, []).append(tp.partition)
        return out

    try:
        return {
            "actives": grouped(app.assignor.assigned_actives()),
            "standbys": grouped(app.assignor.assigned_standbys()),
        }
    except Exception:
        return {"actives": {}, "standbys": {}}


def _rules() -> list[dict[str, Any]]:
    counts: dict[str, dict[str, int]] = {}
    for (rule_id, status), n in stats.alerts.items():
        counts.setdefault(rule_id, {})[status] = n
    return [
        {
            "rule_id": rule.rule_id,
            "version": rule.version,
            "status": rule.status,
            "severity": rule.severity,
            "description": rule.description,
            "group_by": rule.group_by_name,
            "kind": rule.kind,
            **rule.summary(),
            "window_s": rule.window_ms / 1000,
            "alerts": counts.get(rule.rule_id, {}),
        }
        for rule in rulebook.all()
    ]


def stats_body(history: int) -> dict[str, Any]:
    # Keeps every field of the original /stats/ (the bench reads processed, dlq_total and
    # decision_latency_ms) and adds the rest.
    body = stats.snapshot()
    by_rule: dict[str, dict[str, int]] = {}
    for (rule_id, status), n in sorted(stats.alerts.items()):
        by_rule.setdefault(rule_id, {})[status] = n
    lags = consumer_lag(app, broker_offsets.latest)
    uptime = max(time.time() - stats.started_at, 1e-6)
    body.update(
        {
            "worker": {"url": my_url(), "app_id": app.conf.id, "started_at": stats.started_at},
            "throughput": {
                "last_1s": round(stats.throughput(1), 1),
                "last_10s": round(stats.throughput(10), 1),
                "last_60s": round(stats.throughput(60), 1),
                "mean": round(stats.processed / uptime, 1),
            },
            "alerts_total": sum(stats.alerts.values()),
            "alerts_by_rule": by_rule,
            "consumer": {
                "partitions": [lag.to_json() for lag in lags],
                "total_lag": sum(lag.lag or 0 for lag in lags),
            },
            "assignment": _assignment(),
            "rules": _rules(),
            "sink": sink_snapshot(),
            "history": [s.to_json() for s in list(stats.history)[-history:]] if history else [],
        }
    )
    return body


class StatsView(View):
    """Throughput, decision latency, DLQ, alerts, consumer lag and rules of this worker."""

    async def get(self, request: Request) -> Response:
        try:
            only(request.query, ("history",))
            history = parse_int(request.query, "history", HISTORY_DEFAULT, 0, HISTORY_SECONDS)
        except BadParameter as exc:
            return bad_request(self, exc)
        return self.json(stats_body(history))


registry = new_registry(
    Sources(
        stats=stats,
        rules=rulebook.all,
        lag=lambda: consumer_lag(app, broker_offsets.latest),
        sink_topic=alerts_topic.get_topic_name(),
    )
)


class MetricsView(View):
    """Prometheus text exposition, built from in-process counters at scrape time."""

    async def get(self, request: Request) -> Response:
        return self.bytes(exposition(registry), headers={"Content-Type": CONTENT_TYPE})

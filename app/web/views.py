"""HTTP endpoints on the worker's Faust web server.

    GET /cards/{card_id}   one card's state, routed to the worker that owns it
    GET /alerts            this worker's recent alerts (?card=&rule=&limit=)
    GET /stats             throughput, latency, DLQ, alerts, lag, rules (?history=)
    GET /healthz           alive: agents running and never crashed lately, consumer not
                           stalled, internal errors below FRAUD_MAX_INTERNAL_ERRORS_PER_MINUTE,
                           rules follower connected
    GET /readyz            ready: tables recovered, rules topic read to its end offsets
    GET /metrics           Prometheus text
    GET /                  the live dashboard (app/web/static/)

Each path also answers with a trailing slash. Errors are JSON objects with an
``error`` message; a bad parameter gets 400 and its name in ``parameter``.

Routing a card. Faust's ``@app.table_route`` cannot be used here: it hashes the
key as the *table* serializes it (JSON, ``"tok_1"`` with quotes) and looks the
partition up among the changelog's owners. But a table write goes to the
changelog partition of the *source event* (``Table._send_changelog`` uses
``event.message.partition``), and producers key ``payments.raw`` by the raw card
bytes, so a card's state lives in partition ``murmur2(b"tok_1")``, which for
most cards is not ``murmur2(b'"tok_1"')``. Faust's ``topic_route`` would hash the
right bytes but asks the *producer's* metadata for the partition count, and the
worker's producer never writes to ``payments.raw``: its metadata may not hold
the topic at all. So :func:`locate_card` hashes the raw card bytes with Kafka's
default partitioner itself and finds the owner of that partition of the
table's changelog in the assignor's metadata (the changelog is co-partitioned
with ``payments.raw``, so that worker also consumes the card's payments).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import aiohttp
from faust.types import TP
from faust.web import Request, Response, View
from yarl import URL

from app.detection.engine import KeyState
from app.detection.keys import card_partition
from app.detection.models import iso_from_ms
from app.detection.pan import contains_pan
from app.detection.rulebook import rulebook
from app.rules_admin.topic import bootstrap_servers
from app.web.metrics import (
    CONTENT_TYPE,
    ConsumerWatch,
    EndOffsets,
    PartitionLag,
    Sources,
    consumer_lag,
    exposition,
    new_registry,
    sink_snapshot,
)
from app.worker.failures import CRASH_MEMORY_S, failures
from app.worker.faust_app import alerts_topic, app, payments_topic, settings
from app.worker.stats import HISTORY_SECONDS, stats
from tables import card_alerts, card_state, high_value_counts

log = logging.getLogger(__name__)

# A partition with records waiting and no read for this long makes /healthz fail
# (FRAUD_STALL_TIMEOUT, seconds).
STALL_LIMIT_S = settings.stall_timeout_s
# The rules follower may fail (broker unreachable) this long before /healthz fails.
RULES_FOLLOWER_LIMIT_S = 30.0
ALERTS_LIMIT_DEFAULT, ALERTS_LIMIT_MAX = 50, 500
HISTORY_DEFAULT = 60
MAX_ID_LENGTH = 128  # as app.detection.validation accepts for card_id
RULE_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # as app.detection.rules accepts for rule_id
# Set on a request one worker forwards to another, so the owner never forwards it again.
FORWARDED_BY = "X-Fraud-Forwarded-By"
FORWARD_TIMEOUT_S = 5.0
RETRY_AFTER = {"Retry-After": "1"}
STATIC_DIR = Path(__file__).with_name("static")
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The dashboard loads nothing from elsewhere (the machine may be offline) and runs no
# inline script, so a strict policy costs nothing.
STATIC_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


class BadParameter(ValueError):
    """A request parameter is unusable; ``parameter`` names it."""

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"{parameter}: {problem}")
        self.parameter = parameter
        self.problem = problem


def bad_request(view: View, exc: BadParameter) -> Response:
    return view.json(
        {"error": f"bad parameter {exc.parameter!r}: {exc.problem}", "parameter": exc.parameter},
        status=400,
    )


def error(view: View, status: int, message: str, **extra: Any) -> Response:
    headers = RETRY_AFTER if status == 503 else None
    return view.json({"error": message, **extra}, status=status, headers=headers)


# -- parameters ---------------------------------------------------------------------------


def only(query: Mapping[str, str], allowed: Iterable[str]) -> None:
    """Refuse parameters the endpoint does not know (a typo must not be ignored silently)."""
    known = set(allowed)
    for name in query:
        if name not in known:
            raise BadParameter(name, f"unknown parameter (allowed: {', '.join(sorted(known))})")


def single(query: Any, name: str) -> str | None:
    values = query.getall(name, [])
    if len(values) > 1:
        raise BadParameter(name, "given more than once")
    return str(values[0]) if values else None


def parse_card_id(text: str, parameter: str = "card_id") -> str:
    if not text.strip():
        raise BadParameter(parameter, "must be a non-empty card token")
    if len(text) > MAX_ID_LENGTH:
        raise BadParameter(parameter, f"is longer than {MAX_ID_LENGTH} characters")
    if contains_pan(text):
        # The pipeline never holds card numbers; nor should a URL or a log line.
        raise BadParameter(parameter, "looks like a card number; use the card token")
    return text


def parse_rule_id(text: str, parameter: str = "rule") -> str:
    if not RULE_ID.fullmatch(text):
        raise BadParameter(parameter, "is not a rule id ([a-z0-9][a-z0-9._-]{0,63})")
    return text


def parse_int(query: Any, name: str, default: int, low: int, high: int) -> int:
    text = single(query, name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadParameter(name, f"must be an integer from {low} to {high}") from None
    if not low <= value <= high:
        raise BadParameter(name, f"must be from {low} to {high}")
    return value


# -- where a card lives -------------------------------------------------------------------


def _ident(url: Any) -> tuple[str, int]:
    parsed = URL(str(url))
    return (parsed.host or "", parsed.port or 80)


def my_url() -> str:
    return str(app.conf.canonical_url)


@dataclass(frozen=True, slots=True)
class CardOwner:
    partition: int
    owner: str | None  # canonical URL of the worker with the partition active (None: nobody yet)
    local: bool


def _changelog_owners() -> dict[str, list[int]]:
    """Owner URL -> the partitions of ``card_state``'s changelog it holds active."""
    topic = card_state.changelog_topic.get_topic_name()
    try:
        metadata = app.router.table_metadata(card_state.name)
    except Exception:  # no assignment yet
        return {}
    return {str(url): list(topics.get(topic, ())) for url, topics in metadata.items()}


def _partition_count(owners: Mapping[str, list[int]]) -> int:
    try:
        # What the consumer's group coordinator knows of payments.raw: the real count.
        count = app.consumer.topic_partitions(payments_topic.get_topic_name())
    except Exception:
        count = None
    if isinstance(count, int) and count > 0:
        return count
    held = {p for partitions in owners.values() for p in partitions}
    return max(held) + 1 if held else int(app.conf.topic_partitions)


def locate_card(card_id: str) -> CardOwner:
    owners = _changelog_owners()
    partition = card_partition(card_id, _partition_count(owners))
    owner = next((url for url, held in owners.items() if partition in held), None)
    local = owner is not None and _ident(owner) == _ident(my_url())
    return CardOwner(partition, owner, local)


def owns_partition(partition: int) -> bool:
    """This worker holds the card partition active (not just a standby copy)."""
    topic = card_state.changelog_topic.get_topic_name()
    try:
        return TP(topic, partition) in app.assignor.assigned_actives()
    except Exception:
        return False


def tables_recovered() -> bool:
    """Active table partitions are fully restored from their changelogs."""
    try:
        # ``recovery`` is on Faust's TableManager but not on its TableManagerT interface.
        recovery = getattr(app.tables, "recovery")  # noqa: B009
        return bool(recovery.completed.is_set()) and not app.in_recovery
    except Exception:
        return False


# -- reading one card ---------------------------------------------------------------------


def _ms_from_iso(text: Any) -> int | None:
    try:
        return int(datetime.fromisoformat(str(text)).timestamp() * 1000)
    except ValueError:
        return None


def high_value_windows(card_id: str, anchors_s: Iterable[float]) -> list[dict[str, Any]]:
    """The card's high-value counts, one per 5-minute window, oldest first.

    Faust has no API listing a key's windows, and scanning the whole table per
    request would not scale. The windows follow event time, so every window
    that can still be in the table ends within the table's expiry before one of
    the ``anchors_s`` (the wall clock and the card's own newest event times):
    probe exactly those window keys, as ``WindowWrapper`` itself would build them.
    """
    table = high_value_counts.table  # the underlying table, keyed (card_id, (start, end))
    window = table.window
    size = float(window.size)
    horizon = float(window.expires or 2 * 3600.0)
    # Window keys exactly as Faust builds them (a set: anchors' horizons overlap).
    ranges: set[tuple[float, float]] = set()
    for anchor in anchors_s:
        newest_start = window.ranges(anchor)[-1][0]
        for back in range(int(horizon // size) + 2):
            ranges.update(window.ranges(newest_start - back * size + size / 2))
    found = []
    for key_range in sorted(ranges):
        key = (card_id, key_range)
        if key in table:
            start_ms = round(key_range[0] * 1000)
            end_ms = start_ms + round(size * 1000)
            found.append(
                {
                    "start": iso_from_ms(start_ms),
                    "end": iso_from_ms(end_ms),
                    "start_ms": start_ms,
                    "end_ms": end_ms,
                    "count": table[key],
                }
            )
    return found


def read_card(card_id: str, now_s: float | None = None) -> dict[str, Any] | None:
    """Everything this worker's tables hold about a card; None if they hold nothing."""
    state = KeyState.from_json(card_state.get(card_id))
    alerts = list(card_alerts[card_id]) if card_id in card_alerts else []
    anchors = [time.time() if now_s is None else now_s]
    if state.newest_ts:
        anchors.append(state.newest_ts / 1000)
    if alerts and (last := _ms_from_iso(alerts[-1].get("last_event_ts"))) is not None:
        anchors.append(last / 1000)
    windows = high_value_windows(card_id, anchors)
    if not state.rules and state.newest_ts is None and not alerts and not windows:
        return None
    newest = state.newest_ts
    return {
        "card_id": card_id,
        "newest_event_ts": None if newest is None else iso_from_ms(newest),
        "rules": state.describe(),
        "high_value_windows": windows,
        "high_value_amount": str(rulebook.high_value_amount),
        "alerts": alerts,
    }


async def forward(view: View, request: Request, owner: str) -> Response:
    """Ask the owning worker and pass its answer through unchanged."""
    target = URL(owner.rstrip("/") + request.rel_url.raw_path_qs, encoded=True)
    try:
        async with app.http_client.get(
            target,
            headers={FORWARDED_BY: my_url(), "Accept": "application/json"},
            timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S),
        ) as response:
            body = await response.read()
            return view.bytes(
                body,
                status=response.status,
                headers={
                    "Content-Type": response.headers.get("Content-Type", "application/json"),
                    "X-Fraud-Routed-To": owner,
                },
            )
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("forwarding %s to %s failed: %r", request.rel_url, owner, exc)
        return error(view, 503, "the worker owning this card did not answer", owner=owner)


class CardView(View):
    """One card: recent qualifying events per rule, high-value windows, recent alerts."""

    async def get(self, request: Request, card_id: str) -> Response:
        try:
            only(request.query, ())
            card = parse_card_id(card_id)
        except BadParameter as exc:
            return bad_request(self, exc)
        where = locate_card(card)
        if where.owner is None:
            return error(
                self, 503, "no worker owns this card's partition yet", partition=where.partition
            )
        if not where.local:
            if request.headers.get(FORWARDED_BY):
                # Two workers disagree on the owner: a rebalance is under way.
                return error(
                    self,
                    503,
                    "this card's partition is moving between workers; retry",
                    partition=where.partition,
                )
            return await forward(self, request, where.owner)
        if not owns_partition(where.partition) or not tables_recovered():
            return error(
                self,
                503,
                "this card's partition is still recovering; retry",
                partition=where.partition,
            )
        body = read_card(card)
        if body is None:
            return error(self, 404, "unknown card", card_id=card, partition=where.partition)
        body["partition"] = where.partition
        body["served_by"] = my_url()
        return self.json(body)


# -- alerts, stats, health ----------------------------------------------------------------


def _alert_summary(alert: Mapping[str, Any]) -> dict[str, Any]:
    detected_ms = _ms_from_iso(alert.get("detected_at"))
    produced_ms = alert.get("trigger_produced_at_ms") or 0
    try:
        total = str(sum((Decimal(a) for a in alert.get("amounts", ())), Decimal(0)))
    except (InvalidOperation, TypeError):
        total = None
    return {
        **alert,
        "total_amount": total,
        # Decision latency of the alert: its trigger's produce time to detection.
        "latency_ms": None
        if detected_ms is None or produced_ms <= 0
        else max(0, detected_ms - int(produced_ms)),
    }


class AlertsView(View):
    """This worker's most recent alerts, newest first."""

    async def get(self, request: Request) -> Response:
        query = request.query
        try:
            only(query, ("card", "rule", "limit"))
            # An empty filter (``?card=``, as an HTML form sends it) means no filter.
            card_text, rule_text = single(query, "card"), single(query, "rule")
            card = parse_card_id(card_text, "card") if card_text else None
            rule = parse_rule_id(rule_text, "rule") if rule_text else None
            limit = parse_int(query, "limit", ALERTS_LIMIT_DEFAULT, 1, ALERTS_LIMIT_MAX)
        except BadParameter as exc:
            return bad_request(self, exc)
        picked = []
        for alert in reversed(stats.recent_alerts):
            if card is not None and alert.get("group_key") != card:
                continue
            if rule is not None and alert.get("rule_id") != rule:
                continue
            picked.append(_alert_summary(alert))
            if len(picked) >= limit:
                break
        return self.json(
            {"alerts": picked, "count": len(picked), "limit": limit, "served_by": my_url()}
        )


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
            "aggregate": rule.aggregate.text,
            "window_s": rule.window_ms / 1000,
            "threshold": f"{rule.threshold_op} {rule.threshold}",
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
    lags = consumer_lag(app, end_offsets.offsets)
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


watch = ConsumerWatch()
end_offsets = EndOffsets(bootstrap_servers(settings.broker))


def agent_states() -> dict[str, str]:
    """Each agent's service state ("running" when healthy)."""
    return {str(agent.name): str(agent.state) for agent in app.agents.values()}


def observe_consumer() -> tuple[float, list[PartitionLag]]:
    """Feed the stall watch a fresh reading; returns (seconds stalled, the reading)."""
    lags = consumer_lag(app, end_offsets.offsets)
    paused = bool(getattr(app, "in_recovery", False) or getattr(app, "rebalancing", False))
    return watch.observe(lags, time.monotonic(), paused=paused), lags


def rules_follower_failing_s(now: float | None = None) -> float:
    since = stats.rules_follower_failing_since
    if since is None:
        return 0.0
    return (time.monotonic() if now is None else now) - since


def health_body() -> dict[str, Any]:
    """What /healthz judges: a worker that is not detecting must not look healthy."""
    agents = agent_states()
    stalled_s, _ = observe_consumer()
    agents_ok = bool(agents) and all(state == "running" for state in agents.values())
    crashed = failures.crashed_recently()
    consumer_ok = stalled_s <= STALL_LIMIT_S
    errors_ok = not failures.internal_errors_too_many()
    follower_s = rules_follower_failing_s()
    follower_ok = follower_s <= RULES_FOLLOWER_LIMIT_S
    sink = sink_snapshot()
    ok = agents_ok and not crashed and consumer_ok and errors_ok and follower_ok
    return {
        "status": "ok" if ok else "failing",
        "checks": {
            "agents": {
                "ok": agents_ok and not crashed,
                "states": agents,
                # An exception that escaped an agent (Faust restarted it past a record).
                "crashes": dict(failures.crashes),
                "last_crash": failures.last_crash,
                "crashed_within_s": CRASH_MEMORY_S if crashed else None,
            },
            "consumer": {
                "ok": consumer_ok,
                "stalled_s": round(stalled_s, 1),
                "limit_s": STALL_LIMIT_S,
            },
            "internal_errors": {
                "ok": errors_ok,
                "last_minute": failures.internal_errors_last_minute(),
                "limit_per_minute": failures.max_internal_errors_per_minute,
                "total": sum(failures.internal_errors.values()),
            },
            "rules_follower": {
                "ok": follower_ok,
                "failing_s": round(follower_s, 1),
                "limit_s": RULES_FOLLOWER_LIMIT_S,
            },
        },
        # Reported, not judged: restarting the worker does not bring DynamoDB back.
        "sink": None if sink is None else {"healthy": sink.get("healthy")},
    }


class HealthView(View):
    """Liveness: 200 while every check of :func:`health_body` holds, else 503."""

    async def get(self, request: Request) -> Response:
        body = health_body()
        return self.json(body, status=200 if body["status"] == "ok" else 503)


class ReadyView(View):
    """Readiness: 200 once tables are recovered and the rules topic has been read to the
    end offsets it had at start. Zero rules is a valid, ready state."""

    async def get(self, request: Request) -> Response:
        recovered = tables_recovered()
        rules_read = rulebook.loaded.is_set()
        ready = recovered and rules_read
        body = {
            "status": "ready" if ready else "not_ready",
            "checks": {
                "tables_recovered": recovered,
                "rules_topic_read": rules_read,
                "rules_loaded": len(rulebook.all()),
                "rebalancing": bool(getattr(app, "rebalancing", False)),
            },
        }
        return self.json(body, status=200 if ready else 503)


registry = new_registry(
    Sources(
        stats=stats,
        rules=rulebook.all,
        lag=lambda: consumer_lag(app, end_offsets.offsets),
        sink_topic=alerts_topic.get_topic_name(),
    )
)


class MetricsView(View):
    """Prometheus text exposition, built from in-process counters at scrape time."""

    async def get(self, request: Request) -> Response:
        return self.bytes(exposition(registry), headers={"Content-Type": CONTENT_TYPE})


# -- the dashboard ------------------------------------------------------------------------


def static_file(name: str) -> tuple[bytes, str] | None:
    """A file of app/web/static by bare name; nothing outside it, no sub-directories."""
    path = STATIC_DIR / name
    kind = STATIC_TYPES.get(path.suffix)
    if kind is None or "/" in name or name.startswith(".") or not path.is_file():
        return None
    return path.read_bytes(), kind


class StaticView(View):
    async def get(self, request: Request, name: str) -> Response:
        found = static_file(name)
        if found is None:
            return error(self, 404, "no such file", name=name)
        return self.bytes(found[0], headers={"Content-Type": found[1], **STATIC_HEADERS})


class DashboardView(View):
    async def get(self, request: Request) -> Response:
        found = static_file("dashboard.html")
        if found is None:
            return error(self, 404, "dashboard not installed")
        return self.bytes(found[0], headers={"Content-Type": found[1], **STATIC_HEADERS})


async def refresh_end_offsets() -> None:
    await end_offsets.refresh(app)


async def sample_every_second() -> None:
    """Close a second of history (charts, throughput) and refresh the stall watch."""
    stats.tick()
    observe_consumer()


def _register(view: type[View], *paths: str) -> None:
    # Registered at import, before Faust's own blueprints, so "/" is the dashboard
    # rather than Faust's placeholder index (aiohttp serves the first match).
    for path in paths:
        app.page(path, name=f"{view.__name__}:{path}")(view)


_register(DashboardView, "/")
_register(StaticView, "/static/{name}")
_register(CardView, "/cards/{card_id}", "/cards/{card_id}/")
_register(AlertsView, "/alerts", "/alerts/")
_register(StatsView, "/stats", "/stats/")
_register(HealthView, "/healthz", "/healthz/")
_register(ReadyView, "/readyz", "/readyz/")
_register(MetricsView, "/metrics", "/metrics/")
app.timer(1.0, name="web.sample_every_second")(sample_every_second)
app.timer(2.0, name="web.refresh_end_offsets")(refresh_end_offsets)

"""GET /healthz (alive and detecting) and GET /readyz (ready for traffic).

A worker that is not detecting must not look healthy: /healthz fails while an agent is
not running or crashed within the last minute, while an assigned partition has records
waiting and nothing decided for longer than FRAUD_STALL_TIMEOUT (whatever holds it up: a
batch waiting for its alerts or the rules, a recovery, a rebalance), while internal errors
pass FRAUD_MAX_INTERNAL_ERRORS_PER_MINUTE, for a minute after a refused DLQ send, and while
the rules follower keeps failing. /readyz waits for recovered tables and the rules topic read
to its end offsets.
"""

from __future__ import annotations

import time
from typing import Any

from faust.web import Request, Response, View

from app.detection.lists import listbook
from app.detection.rulebook import rulebook
from app.rules_admin.topic import bootstrap_servers
from app.web.cluster import tables_recovered
from app.web.consumer import BrokerOffsets, ConsumerWatch, PartitionLag, consumer_lag
from app.web.metrics import sink_snapshot
from app.worker.failures import CRASH_MEMORY_S, DLQ_FAILURE_MEMORY_S, failures
from app.worker.faust_app import app, settings
from app.worker.stats import stats

# A partition with records waiting and nothing decided for this long makes /healthz fail
# (FRAUD_STALL_TIMEOUT, seconds).
STALL_LIMIT_S = settings.stall_timeout_s
# The rules follower may fail (broker unreachable) this long before /healthz fails.
RULES_FOLLOWER_LIMIT_S = 30.0

watch = ConsumerWatch()
broker_offsets = BrokerOffsets(bootstrap_servers(settings.broker))


def agent_states() -> dict[str, str]:
    """Each agent's service state ("running" when healthy)."""
    return {str(agent.name): str(agent.state) for agent in app.agents.values()}


def observe_consumer() -> tuple[float, list[PartitionLag]]:
    """Feed the stall watch a fresh reading; returns (seconds stalled, the reading)."""
    lags = consumer_lag(app, broker_offsets.latest)
    return watch.observe(lags, time.monotonic()), lags


def consumer_check() -> dict[str, Any]:
    """The stall watch's verdict, with the partitions past the limit and what may hold
    them up (reported only: the stall alone is judged, whatever its cause)."""
    stalled_s, lags = observe_consumer()
    by_key = {(lag.topic, lag.partition): lag for lag in lags}
    stalled = [
        {**by_key[key].to_json(), "stalled_s": round(seconds, 1)}
        for key, seconds in sorted(watch.stalled.items())
        if seconds > STALL_LIMIT_S and key in by_key
    ]
    return {
        "ok": stalled_s <= STALL_LIMIT_S,
        "stalled_s": round(stalled_s, 1),
        "limit_s": STALL_LIMIT_S,
        "stalled_partitions": stalled,
        "in_recovery": bool(getattr(app, "in_recovery", False)),
        "rebalancing": bool(getattr(app, "rebalancing", False)),
        "rules_topic_read": rulebook.loaded.is_set(),
    }


def dlq_check() -> dict[str, Any]:
    at = failures.last_dlq_send_failure_at
    return {
        "ok": not failures.dlq_sends_failing(),
        "send_failures": failures.dlq_send_failures,
        "last_failure_s_ago": None if at is None else round(failures.clock() - at, 1),
        "fails_for_s": DLQ_FAILURE_MEMORY_S,
    }


def rules_follower_failing_s(now: float | None = None) -> float:
    since = stats.rules_follower_failing_since
    if since is None:
        return 0.0
    return (time.monotonic() if now is None else now) - since


def archive_status() -> dict[str, Any] | None:
    if not settings.archive_enabled:
        return None
    since = stats.archive_failing_since
    return {
        "failing_s": None if since is None else round(time.monotonic() - since, 1),
        "rows": stats.archived_rows,
        "files": stats.archived_files,
    }


def health_body() -> dict[str, Any]:
    """What /healthz judges: a worker that is not detecting must not look healthy."""
    agents = agent_states()
    consumer = consumer_check()
    agents_ok = bool(agents) and all(state == "running" for state in agents.values())
    crashed = failures.crashed_recently()
    errors_ok = not failures.internal_errors_too_many()
    dlq = dlq_check()
    follower_s = rules_follower_failing_s()
    follower_ok = follower_s <= RULES_FOLLOWER_LIMIT_S
    sink = sink_snapshot()
    ok = agents_ok and not crashed and consumer["ok"] and errors_ok and dlq["ok"] and follower_ok
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
            "consumer": consumer,
            "internal_errors": {
                "ok": errors_ok,
                "last_minute": failures.internal_errors_last_minute(),
                "limit_per_minute": failures.max_internal_errors_per_minute,
                "total": sum(failures.internal_errors.values()),
            },
            # A refused dead letter is a record lost: its source offset is committed anyway.
            "dlq_sends": dlq,
            "rules_follower": {
                "ok": follower_ok,
                "failing_s": round(follower_s, 1),
                "limit_s": RULES_FOLLOWER_LIMIT_S,
            },
        },
        # Reported, not judged: restarting the worker does not bring DynamoDB back.
        "sink": None if sink is None else {"healthy": sink.get("healthy")},
        # Reported, not judged, like the sink: an unreachable archive does not stop detection,
        # and its records wait in Kafka (uncommitted) until it is back.
        "archive": archive_status(),
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
        lists_read = listbook.loaded.is_set()  # detection waits for both (agents.batch)
        ready = recovered and rules_read and lists_read
        body = {
            "status": "ready" if ready else "not_ready",
            "checks": {
                "tables_recovered": recovered,
                "rules_topic_read": rules_read,
                "rules_loaded": len(rulebook.all()),
                # What the rules topic's read at start waits for, per partition.
                "rules_topic_unread": {
                    str(partition): {"position": position, "end_offset": end}
                    for partition, (position, end) in sorted(rulebook.unread.items())
                },
                "rebalancing": bool(getattr(app, "rebalancing", False)),
                "lists_topics_read": lists_read,
            },
        }
        return self.json(body, status=200 if ready else 503)


async def refresh_broker_offsets() -> None:
    await broker_offsets.refresh(app)


async def sample_every_second() -> None:
    """Close a second of history (charts, throughput) and refresh the stall watch."""
    stats.tick()
    observe_consumer()

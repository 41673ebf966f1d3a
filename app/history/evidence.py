"""Backtests as the CLI, the HTTP API and the dashboard ask for them, on the configured
archive (``FRAUD_ARCHIVE_URL``), and the evidence for promoting a shadow rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from app.detection.rules import Rule
from app.history.backtest import (
    Replay,
    archived_payments_of_partitions,
    backtest,
    check_range,
    files_in_range,
    in_range,
    live_alerts,
    parse_moment,
    scan,
)
from app.history.files import Archive
from app.history.outcomes import (
    Outcome,
    fraud_payments,
    live_outcomes,
    outcomes_report,
    read_labels,
)
from app.history.schema import ALERTS, TIME
from app.worker.settings import Settings

# A shadow rule's evidence looks this far back.
EVIDENCE_DAYS = 7


def open_archive(settings: Settings) -> Archive:
    return Archive.at(
        settings.archive_url, endpoint=settings.archive_s3_endpoint, region=settings.aws_region
    )


def run_backtest(settings: Settings, rule: Rule, since: str, until: str) -> dict[str, Any]:
    """The backtest report of ``rule`` on ``[since, until)``; BacktestError or ArchiveError
    (both ValueError) name what is wrong."""
    start, end = parse_moment(since, "--since"), parse_moment(until, "--until")
    check_range(start, end)
    lateness = int(settings.allowed_lateness_s * 1000)
    archive = open_archive(settings)
    report = backtest(archive, rule, start, end, lateness, max_key_events=settings.max_key_events)
    found = report.to_json()
    # What the labels say of the alerts it would have raised (app.history.outcomes).
    book = read_labels(archive, start)
    outcome = Outcome(rule.rule_id, rule.version, rule.status)
    for alert in report.alerts:
        outcome.add(alert.alert_id, alert.txn_ids, book)
    found["outcomes"] = outcome.to_json(fraud_payments(archive, book, start, end))
    return found


def live_alert_count(
    archive: Archive, rule: Rule, since: datetime, until: datetime, arrived: datetime
) -> int:
    """Alerts the rule's version in force raised live (shadow or active): on payments of
    event time in [since, until), published to Kafka from ``arrived``. Read a batch at a
    time; only the distinct ids are kept."""
    files = files_in_range(archive, "alerts", since, until, missing_ok=True)
    wanted = (
        in_range(ALERTS, "last_event_ts", since, until)
        & (ds.field("rule_id") == rule.rule_id)
        & (ds.field("rule_version") == rule.version)
        & (ds.field("kafka_timestamp") >= pa.scalar(arrived, type=TIME))
    )
    ids: set[str] = set()
    for batch in scan(archive, [f.path for f in files], ALERTS, ["alert_id"], wanted):
        ids.update(batch.column("alert_id").to_pylist())
    return len(ids)


def shadow_evidence(
    settings: Settings,
    rule: Rule,
    published_ms: int | None,
    now: datetime | None = None,
    days: int = EVIDENCE_DAYS,
) -> dict[str, Any]:
    """A shadow rule's live alerts beside what a backtest of the same payments raises:
    the payments of the last ``days`` (event time) that reached Kafka after the rule's
    version was published, which is what the live rule saw. Equal counts say the live
    rule behaves as its backtest predicts.

    The backtest's alerts are counted as they are raised, never kept: a noisy shadow rule
    (the reason to shadow it) costs no memory for its alerts."""
    until = (now or datetime.now(UTC)).replace(microsecond=0)
    since = until - timedelta(days=days)
    published = (
        since if published_ms is None else datetime.fromtimestamp(published_ms / 1000, tz=UTC)
    )
    archive = open_archive(settings)
    live = live_alerts(archive, since, until)
    book = read_labels(archive, since)
    judged = Outcome(rule.rule_id, rule.version, rule.status)
    replay = Replay(rule, int(settings.allowed_lateness_s * 1000), settings.max_key_events)
    raised = overlapping = 0
    for alert in replay.alerts(archived_payments_of_partitions(archive, since, until, published)):
        raised += 1
        overlapping += not live.txn_ids.isdisjoint(alert.txn_ids)
        judged.add(alert.alert_id, alert.txn_ids, book)
    # The labels' word on the same payments: the backtest's alerts, the rule's live ones,
    # and those of each active rule (what the shadow rule would add to or replace).
    fraud = fraud_payments(archive, book, since, until, published)
    outcomes = live_outcomes(archive, book, since, until, published)
    shadow = (rule.rule_id, rule.version, rule.status)
    live_judged = outcomes.get(shadow, Outcome(*shadow))
    active = [o for key, o in sorted(outcomes.items()) if key[2] == "active"]
    return {
        "rule_id": rule.rule_id,
        "rule_version": rule.version,
        "status": rule.status,
        "published": published.isoformat(),
        "since": since.isoformat(),
        "until": until.isoformat(),
        "live_alerts": live_alert_count(archive, rule, since, until, published),
        "backtest_alerts": raised,
        "payments_replayed": replay.payments,
        "overlapping_active_alerts": overlapping,
        "outcomes": judged.to_json(fraud),
        "live_outcomes": live_judged.to_json(fraud),
        "active_outcomes": [o.to_json(fraud) for o in active],
    }


def rules_outcomes(
    settings: Settings,
    days: int = EVIDENCE_DAYS,
    rule_id: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Every rule version's outcomes over the last ``days`` of event time, from the archive
    (``app.history.outcomes``): what ``rules show``, ``GET /rules/outcomes`` and the
    dashboard report."""
    until = (now or datetime.now(UTC)).replace(microsecond=0)
    since = until - timedelta(days=days)
    return outcomes_report(open_archive(settings), since, until, rule_id)

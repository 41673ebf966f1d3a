"""Backtests as the CLI, the HTTP API and the dashboard ask for them, on the configured
archive (``FRAUD_ARCHIVE_URL``), and the evidence for promoting a shadow rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow.dataset as ds
import pyarrow.fs as pafs

from app.detection.rules import Rule
from app.history.backtest import backtest, check_range, parse_moment
from app.history.files import Archive, ArchiveError
from app.history.schema import ALERTS
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
    lateness_ms = int(settings.allowed_lateness_s * 1000)
    report = backtest(
        open_archive(settings),
        rule,
        start,
        end,
        lateness_ms,
        max_key_events=settings.max_key_events,
    )
    return report.to_json()


def live_alert_count(archive: Archive, rule: Rule, since: datetime, arrived: datetime) -> int:
    """Alerts the rule's version in force raised live (shadow or active): on payments of
    event time from ``since``, published to Kafka from ``arrived``."""
    path = archive.path("alerts")
    if archive.filesystem.get_file_info(path).type == pafs.FileType.NotFound:
        return 0
    try:
        dataset = ds.dataset(path, filesystem=archive.filesystem, format="parquet", schema=ALERTS)
        table = dataset.to_table(
            columns=["alert_id"],
            filter=(ds.field("rule_id") == rule.rule_id)
            & (ds.field("rule_version") == rule.version)
            & (ds.field("last_event_ts") >= since)
            & (ds.field("kafka_timestamp") >= arrived),
        )
    except OSError as exc:
        raise ArchiveError(f"cannot read the archive at {archive.url}: {exc}") from None
    return len(set(table.column("alert_id").to_pylist()))


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
    rule behaves as its backtest predicts."""
    until = (now or datetime.now(UTC)).replace(microsecond=0)
    since = until - timedelta(days=days)
    published = (
        since if published_ms is None else datetime.fromtimestamp(published_ms / 1000, tz=UTC)
    )
    archive = open_archive(settings)
    lateness_ms = int(settings.allowed_lateness_s * 1000)
    report = backtest(
        archive,
        rule,
        since,
        until,
        lateness_ms,
        arrived_since=published,
        max_key_events=settings.max_key_events,
    )
    return {
        "rule_id": rule.rule_id,
        "rule_version": rule.version,
        "status": rule.status,
        "published": published.isoformat(),
        "since": since.isoformat(),
        "until": until.isoformat(),
        "live_alerts": live_alert_count(archive, rule, since, published),
        "backtest_alerts": len(report.alerts),
        "payments_replayed": report.payments,
        "overlapping_active_alerts": report.overlapping,
    }

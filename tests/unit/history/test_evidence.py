"""app/history/evidence.py: a shadow rule's live alerts beside its backtest, on an archive."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from app.detection.engine import KeyState, evaluate
from app.detection.models import Alert
from app.detection.rules import SEED_RULE
from app.history.evidence import shadow_evidence
from app.history.files import Archive
from app.history.rolling import PartitionBuffer
from app.worker.settings import Settings
from tests.unit.history.test_backtest import LATENESS_MS, archive_of, stream

SHADOW = replace(SEED_RULE, rule_id="burst-shadow", status="shadow")


def write_alerts(archive: Archive, alerts: list[Alert]) -> None:
    """The alerts as the archive agent writes them: one partition, one roll."""
    buffer = PartitionBuffer("alerts", 10**9, 1e9, time.monotonic)
    for offset, alert in enumerate(alerts):
        raw = alert.to_json()
        kafka_ms = int(datetime.fromisoformat(alert.last_event_ts).timestamp() * 1000) + 5
        buffer.add(offset, kafka_ms, alert.alert_id.encode(), raw)
    files, _ = buffer.roll()
    for f in files:
        path = archive.file_path(f.kind, f.date, f.hour, "fraud.alerts", 0, f.first, f.last)
        archive.write(path, f.table)


def test_a_shadow_rule_s_live_alerts_equal_its_backtest_and_overlap_the_active_ones(
    tmp_path: Path,
) -> None:
    payments = stream()
    archive = archive_of(payments, tmp_path / "archive")
    states: dict[str, KeyState] = {}
    alerts: list[Alert] = []
    for p in payments:
        state = states.setdefault(p.card_id, KeyState())
        alerts += evaluate(state, p, p.card_id, [SEED_RULE, SHADOW], LATENESS_MS, 0, 0).alerts
    write_alerts(archive, alerts)
    shadowed = [a for a in alerts if a.rule_id == SHADOW.rule_id]
    settings = Settings(archive_url=archive.url, allowed_lateness_s=LATENESS_MS / 1000)

    evidence = shadow_evidence(settings, SHADOW, None, now=datetime(2026, 11, 23, tzinfo=UTC))

    assert evidence["payments_replayed"] == len(payments)
    assert evidence["live_alerts"] == evidence["backtest_alerts"] == len(shadowed) > 5
    # Each burst the shadow copy catches, the active seed rule caught too.
    assert evidence["overlapping_active_alerts"] == len(shadowed)
    assert evidence["rule_version"] == SHADOW.version and evidence["status"] == "shadow"

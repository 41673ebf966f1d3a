"""The archive how-to's DuckDB queries (docs/snippets/archive/, included into the page)
run on an archive as the archive agent writes it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from app.detection.rules import SEED_RULE
from app.history.backtest import backtest
from app.history.rolling import PartitionBuffer
from tests.docs import SNIPPETS, page
from tests.unit.history.test_backtest import LATENESS_MS, archive_of, stream

QUERIES = ("payments-per-hour", "alerts-per-rule", "training-set")


def archive_query(name: str) -> str:
    return (SNIPPETS / "archive" / f"{name}.sql").read_text(encoding="utf-8")


@pytest.fixture
def archive_dir(tmp_path: Path) -> Path:
    payments = stream(4000)
    archive = archive_of(payments, tmp_path / "archive")
    since = datetime(2026, 11, 20, tzinfo=UTC)
    report = backtest(archive, SEED_RULE, since, since + timedelta(days=7), LATENESS_MS)
    buffer = PartitionBuffer("alerts", 10**9, 1e9, time.monotonic)
    for offset, alert in enumerate(report.alerts):
        raw = alert.to_json()
        buffer.add(offset, 1795940000000, alert.alert_id.encode(), raw)
    for f in buffer.roll()[0]:
        archive.write(
            archive.file_path(f.kind, f.date, f.hour, "fraud.alerts", 0, f.first, f.last), f.table
        )
    return tmp_path / "archive"


def run(query: str, archive_dir: Path) -> list[tuple[object, ...]]:
    return duckdb.sql(query.replace("'.cache/archive/", f"'{archive_dir}/")).fetchall()


def test_the_how_to_shows_each_query_from_its_file() -> None:
    how_to = page("how-to/archive-and-backtest.md")
    shown = [f'--8<-- "docs/snippets/archive/{name}.sql"' for name in QUERIES]
    assert all(line in how_to for line in shown)
    assert sorted(p.stem for p in (SNIPPETS / "archive").glob("*.sql")) == sorted(QUERIES)


def test_payments_per_hour_add_up_to_every_payment(archive_dir: Path) -> None:
    rows = run(archive_query("payments-per-hour"), archive_dir)
    assert sum(int(str(r[2])) for r in rows) == 4000
    assert len(rows) > 1  # the stream spans hours


def test_alerts_per_rule_and_the_labelled_training_set(archive_dir: Path) -> None:
    ((rule_id, version, status, alerts, keys),) = run(archive_query("alerts-per-rule"), archive_dir)
    assert (rule_id, version, status) == (SEED_RULE.rule_id, SEED_RULE.version, "active")
    assert int(str(alerts)) > 5 and 0 < int(str(keys)) <= int(str(alerts))
    rows = run(archive_query("training-set"), archive_dir)
    flagged = [r for r in rows if r[-2]]
    assert len(flagged) == 3 * int(str(alerts))  # three payments per alert, each once
    assert all(r[-1] == [SEED_RULE.rule_id] for r in flagged)

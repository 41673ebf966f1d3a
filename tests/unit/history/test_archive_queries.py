"""The archive how-to's DuckDB queries (docs/snippets/archive/, included into the page)
run on an archive as the archive agent writes it."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from app.cases.labels import disposition_label, parse_chargebacks
from app.detection.rules import SEED_RULE
from app.history.backtest import backtest
from app.history.rolling import PartitionBuffer
from tests.docs import SNIPPETS, page
from tests.factories import closed_case
from tests.unit.history.test_backtest import LATENESS_MS, archive_of, stream
from tests.unit.history.test_outcomes import write_labels

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
    first, second = report.alerts[0], report.alerts[1]
    flagged = {t for a in report.alerts for t in a.txn_ids}
    unflagged = next(p.txn_id for p in payments if p.txn_id not in flagged)
    write_labels(
        archive,
        [
            disposition_label(
                closed_case(case_id="1" * 24, disposition="fraud", txn_ids=first.txn_ids)
            ),
            # The same subject labelled twice: the latest label (not fraud) counts.
            disposition_label(
                closed_case(case_id="2" * 24, disposition="fraud", txn_ids=second.txn_ids)
            ),
            disposition_label(closed_case(case_id="2" * 24, txn_ids=second.txn_ids)),
            *parse_chargebacks(
                f"txn_id,date,reason\n{unflagged},2026-11-29,stolen\n"
                f"{second.txn_ids[1]},2026-11-29,stolen\n"
            ),
        ],
        1795940000000,
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
    assert len(rows) == 4000, "every payment once"
    labelled = Counter(r[-1] for r in rows)
    # The first alert's 3 payments (its case), a chargeback no rule flagged, and one of the
    # second alert's payments whose not-fraud case a chargeback overrules.
    assert labelled["fraud"] == 5
    assert labelled["not_fraud"] == 2 and labelled[None] == 4000 - 7
    # Not which rules fired: most payments the seed rule flagged have no label.
    assert labelled[None] > 3 * int(str(alerts)) - 7

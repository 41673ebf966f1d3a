"""app/history/outcomes.py: rules judged by hand-made labels, each number checked; the
labels read back from an archive written as the archive agent writes it."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from app.cases.labels import Label, disposition_label, parse_chargebacks
from app.cases.model import Case
from app.detection.rules import SEED_RULE
from app.history.files import Archive
from app.history.outcomes import (
    FraudPayments,
    LabelBook,
    LabelFacts,
    Outcome,
    outcome_line,
    outcomes_report,
    read_labels,
)
from app.history.rolling import PartitionBuffer
from app.history.schema import label_row
from tests.factories import alert, closed_case, payment
from tests.unit.history.test_backtest import write_payments
from tests.unit.history.test_evidence import write_alerts

DAY = datetime(2026, 11, 28, tzinfo=UTC)
DAY_MS = int(DAY.timestamp() * 1000)


def case(case_id: str, disposition: str, alert_ids: tuple[str, ...], txns: tuple[str, ...]) -> Case:
    return closed_case(
        case_id=case_id * 24,
        opening_alert_id=alert_ids[0],
        last_alert_id=alert_ids[-1],
        alert_count=len(alert_ids),
        alert_ids=alert_ids,
        txn_count=len(txns),
        txn_ids=txns,
        disposition=disposition,
    )


def chargebacks(*txn_ids: str) -> list[Label]:
    lines = "".join(f"{t},2026-11-29,stolen card\n" for t in txn_ids)
    return parse_chargebacks("txn_id,date,reason\n" + lines)


# The hand-made world: five alerts of one rule version, three closed cases, two chargebacks.
LABELS = [
    disposition_label(case("1", "fraud", ("a1",), ("t1", "t2", "t3"))),
    disposition_label(case("2", "not_fraud", ("a2",), ("t4", "t5"))),
    disposition_label(case("3", "inconclusive", ("a3",), ("t6",))),
    *chargebacks("t8", "t9"),  # t8 is a4's; t9 no rule flagged: a missed fraud
]
ALERTS = {
    "a1": ("t1", "t2", "t3"),  # its case: fraud
    "a2": ("t4", "t5"),  # its case: not fraud
    "a3": ("t6",),  # its case: inconclusive
    "a4": ("t8",),  # no case; a chargeback on its payment: fraud
    "a5": ("t7",),  # no case, no label
}
FRAUD = FraudPayments(
    {
        "t1": (Decimal("1000"), "EUR"),
        "t2": (Decimal("1500.50"), "EUR"),
        "t3": (Decimal("2000"), "EUR"),
        "t8": (Decimal("700"), "GBP"),
        "t9": (Decimal("300"), "GBP"),
    }
)


def book_of(labels: list[Label]) -> LabelBook:
    return LabelBook.of((label.key, LabelFacts.of(label.body)) for label in labels)


def judged(book: LabelBook) -> Outcome:
    outcome = Outcome("high-value-burst", 3, "active")
    for alert_id, txn_ids in ALERTS.items():
        outcome.add(alert_id, txn_ids, book)
    return outcome


def test_each_number_of_a_rule_version_s_outcome_is_what_the_labels_give() -> None:
    found = judged(book_of(LABELS)).to_json(FRAUD)

    assert found == {
        "rule_id": "high-value-burst",
        "rule_version": 3,
        "status": "active",
        "alerts": 5,
        "cases": 3,
        "fraud_alerts": 2,  # a1 (its case), a4 (a chargeback on its payment)
        "not_fraud_alerts": 1,  # a2
        "inconclusive_alerts": 1,  # a3: neither fraud nor not, left out of precision
        "unlabelled_alerts": 1,  # a5
        "precision": 0.6667,  # 2 fraud / (2 fraud + 1 not fraud)
        "fraud_payments_caught": 4,  # t1, t2, t3, t8
        "fraud_payments": 5,  # ... and t9, which no alert cites
        "missed_fraud_payments": 1,
        "recall": 0.8,
        "amount_caught": {"EUR": "4500.5", "GBP": "700"},
    }
    line = outcome_line(found)
    assert "precision 0.67 (2/3)" in line and "recall 0.80 (4/5)" in line
    assert "caught 4500.5 EUR, 700 GBP" in line and "1 unlabelled" in line


def test_a_chargeback_overrules_a_not_fraud_disposition_and_fraud_wins_over_any_other() -> None:
    book = book_of([*LABELS, *chargebacks("t5")])

    assert book.payments["t5"] == "fraud" and book.payments["t4"] == "not_fraud"
    found = judged(book).to_json(FRAUD)
    # a2 has a fraud payment now: 3 fraud alerts, none not fraud.
    assert (found["fraud_alerts"], found["not_fraud_alerts"], found["precision"]) == (3, 0, 1.0)
    # t5 is fraud but not among the period's payments (FRAUD): not counted as caught.
    assert found["fraud_payments_caught"] == 4


def test_the_latest_label_of_a_subject_counts_and_a_tombstone_withdraws_it() -> None:
    reclosed = disposition_label(case("3", "not_fraud", ("a3",), ("t6",)))
    withdrawn = ("txn:t8", LabelFacts.of(None))
    records = [(label.key, LabelFacts.of(label.body)) for label in [*LABELS, reclosed]]
    book = LabelBook.of([*records, withdrawn])

    assert book.payments["t6"] == "not_fraud" and "t8" not in book.payments
    assert book.labels == 4  # three cases and t9's chargeback
    found = judged(book).to_json(FRAUD)
    assert (found["fraud_alerts"], found["not_fraud_alerts"]) == (1, 2)
    assert (found["inconclusive_alerts"], found["unlabelled_alerts"]) == (0, 2)


def test_no_labels_give_no_ratio_rather_than_zero() -> None:
    found = judged(LabelBook()).to_json(FraudPayments())

    assert found["alerts"] == 5 and found["unlabelled_alerts"] == 5
    assert found["precision"] is None and found["recall"] is None
    assert found["amount_caught"] == {}
    assert "precision - (0/0)" in outcome_line(found)


def write_labels(archive: Archive, labels: list[Label], kafka_ms: int) -> None:
    """The labels as the archive agent writes them: one partition, one roll."""
    buffer = PartitionBuffer("labels", 10**9, 1e9, time.monotonic)
    for offset, label in enumerate(labels):
        key, value = label.record()
        buffer.add(offset, kafka_ms + offset, key.encode(), value)
    files, _ = buffer.roll()
    for f in files:
        path = archive.file_path(f.kind, f.date, f.hour, "fraud.labels", 0, f.first, f.last)
        archive.write(path, f.table)


def test_a_label_record_is_archived_with_its_fields_and_placed_by_when_it_was_given() -> None:
    key, value = LABELS[0].record()
    row = label_row(key.encode(), value, 0, 7, DAY_MS + 3_600_000 * 15)

    assert row is not None and (row.date, row.hour) == ("2026-11-28", 15)
    assert row.values["label"] == "fraud" and row.values["txn_ids"] == ["t1", "t2", "t3"]
    assert row.values["alert_ids"] == ["a1"] and row.values["by"] == "alice"
    tombstone = label_row(b"txn:t8", None, 0, 8, DAY_MS)
    assert tombstone is not None and tombstone.values["key"] == "txn:t8"
    assert "label" not in tombstone.values
    assert label_row(None, value, 0, 9, DAY_MS) is None  # no subject: not a label
    assert label_row(b"txn:t1", b"{not json", 0, 9, DAY_MS) is None


def test_outcomes_from_the_archive_judge_each_rule_version_and_count_what_all_missed(
    tmp_path: Path,
) -> None:
    archive = Archive.at(str(tmp_path / "archive"))
    at = DAY_MS + 14 * 3_600_000
    amounts = {"t1": "1000", "t2": "1500.50", "t3": "2000", "t8": "700", "t9": "300"}
    payments = [
        payment(
            card_id="tok_1",
            txn_id=f"t{n}",
            amount=amounts.get(f"t{n}", "20"),
            ts_ms=at + n * 1000,
            currency="GBP" if n in (8, 9) else "EUR",
        )
        for n in range(1, 10)
    ]
    write_payments(archive, payments, partitions=1)
    last = payments[-1].ts
    alerts = [
        alert(
            n, alert_id=alert_id, txn_ids=txn_ids, amounts=("1",) * len(txn_ids), last_event_ts=last
        )
        for n, (alert_id, txn_ids) in enumerate(ALERTS.items())
    ]
    # A shadow version of another rule cites t9 (the fraud the active rule missed) and t7.
    shadow = alert(
        9,
        alert_id="s1",
        rule_id="burst-pair",
        rule_version=1,
        status="shadow",
        txn_ids=("t7", "t9"),
        amounts=("1", "1"),
        last_event_ts=last,
    )
    write_alerts(archive, [*alerts, shadow, alerts[0]])  # a1 archived twice counts once
    write_labels(archive, LABELS, at + 600_000)

    report = outcomes_report(archive, DAY, DAY + timedelta(days=1))

    assert report["labels"] == 5 and report["fraud_payments"] == 5
    assert report["fraud_amount"] == {"EUR": "4500.5", "GBP": "1000"}
    assert (report["caught_by_active_rules"], report["missed_by_active_rules"]) == (4, 1)
    active, pair = sorted(report["rules"], key=lambda r: r["status"])
    assert active == judged(book_of(LABELS)).to_json(FRAUD)
    assert (pair["rule_id"], pair["status"], pair["alerts"]) == ("burst-pair", "shadow", 1)
    assert (pair["fraud_alerts"], pair["recall"], pair["amount_caught"]) == (1, 0.2, {"GBP": "300"})
    # Labels given before the period's first day cannot label its payments: not read.
    assert read_labels(archive, DAY + timedelta(days=1)).labels == 0


def test_a_backtest_and_the_shadow_evidence_report_what_the_labels_say(tmp_path: Path) -> None:
    from app.history.evidence import run_backtest, shadow_evidence  # noqa: PLC0415
    from app.worker.settings import Settings  # noqa: PLC0415

    archive = Archive.at(str(tmp_path / "archive"))
    at = DAY_MS + 14 * 3_600_000
    burst = [payment(txn_id=f"b{n}", ts_ms=at + n * 1000) for n in range(3)]
    lone = payment(card_id="tok_2", txn_id="lone", ts_ms=at + 5000)  # a fraud no rule sees
    write_payments(archive, [*burst, lone], partitions=1)
    write_labels(archive, chargebacks("b0", "lone"), at + 60_000)
    settings = Settings(archive_url=archive.url, allowed_lateness_s=60)

    report = run_backtest(settings, SEED_RULE, "2026-11-28", "2026-11-29")
    evidence = shadow_evidence(
        settings, replace(SEED_RULE, status="shadow"), None, now=DAY + timedelta(days=1)
    )

    outcomes = report["outcomes"]
    assert report["alerts"] == 1
    assert (outcomes["fraud_alerts"], outcomes["precision"]) == (1, 1.0)
    assert (outcomes["fraud_payments_caught"], outcomes["fraud_payments"]) == (1, 2)
    assert outcomes["recall"] == 0.5 and outcomes["amount_caught"] == {"USD": "1500"}
    assert evidence["outcomes"] == {**outcomes, "status": "shadow"}
    assert evidence["live_outcomes"]["alerts"] == 0 and evidence["active_outcomes"] == []

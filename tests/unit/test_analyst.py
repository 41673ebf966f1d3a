"""infra/local/analyst.py: the demo's stand-in analyst decides by the generator's truth, and
charges back the fraud no case called fraud, once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from app.cases.labels import parse_chargebacks
from app.generator import PaymentGenerator
from infra.local.analyst import (
    CHARGEBACK_DELAY_S,
    KEEP_S,
    Truth,
    chargeback_csv,
    due_for_review,
)

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


def truth_line(txn_ids: list[str], last: datetime = T0) -> str:
    return json.dumps({"card_id": "tok_1", "txn_ids": txn_ids, "last_ts": last.isoformat()})


def test_the_truth_file_is_followed_a_whole_line_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "truth.jsonl"
    truth = Truth(path)
    truth.follow()  # not there yet: nothing
    half = truth_line(["t3"])
    path.write_text(truth_line(["t1", "t2"]) + "\n" + half[:10])
    truth.follow()
    assert set(truth.fraud) == {"t1", "t2"}
    path.write_text(truth_line(["t1", "t2"]) + "\n" + half + "\n")
    truth.follow()
    assert set(truth.fraud) == {"t1", "t2", "t3"}


def test_the_generator_s_truth_names_its_injected_payments() -> None:
    generator = PaymentGenerator(seed=3, fraud_ratio=0.5)
    payments, burst = generator.burst(T0_MS)
    truth = Truth(Path("unused"))
    truth.add([burst.to_json()])
    assert set(truth.fraud) == {p.txn_id for p in payments}
    assert all(p.amount >= Decimal(1000) for p in payments)


def test_a_case_is_fraud_when_any_of_its_payments_is_injected_fraud() -> None:
    truth = Truth(Path("unused"))
    truth.add([truth_line(["t1", "t2", "t3"])])
    assert truth.disposition({"txn_ids": ["x", "t2"]}) == "fraud"
    assert truth.disposition({"txn_ids": ["x", "y"]}) == "not_fraud"
    opened = {"opened_at": T0.isoformat()}
    assert not due_for_review(opened, T0 + timedelta(seconds=5))
    assert due_for_review(opened, T0 + timedelta(seconds=20))


def test_fraud_no_case_called_fraud_is_charged_back_once_after_the_delay() -> None:
    truth = Truth(Path("unused"))
    truth.add([truth_line(["t1", "t2", "t3"]), truth_line(["lone"])])
    truth.closed({"txn_ids": ["t1", "t2", "t3"]}, "fraud")  # a case caught the burst
    assert truth.chargebacks(T0_MS + 1000) == []  # too soon
    later = T0_MS + int(CHARGEBACK_DELAY_S * 1000)
    due = truth.chargebacks(later)
    assert due == ["lone"]
    assert truth.chargebacks(later) == ["lone"], "not published yet: still due"
    truth.charged(due)
    assert truth.chargebacks(later + 1000) == []
    truth.chargebacks(T0_MS + int(KEEP_S * 1000) + 1)
    assert truth.fraud == {} and truth.labelled == set(), "the truth is kept a while only"

    labels = parse_chargebacks(chargeback_csv(due, "2026-12-05"))
    assert [(label.key, label.body["label"]) for label in labels] == [("txn:lone", "fraud")]


def test_a_case_closed_as_not_fraud_leaves_its_fraud_to_the_chargebacks() -> None:
    truth = Truth(Path("unused"))
    truth.add([truth_line(["t1"])])
    truth.closed({"txn_ids": ["t1"]}, "not_fraud")  # someone else's wrong call
    assert truth.chargebacks(T0_MS + int(CHARGEBACK_DELAY_S * 1000)) == ["t1"]


def test_a_genuine_pattern_is_not_fraud_and_a_backfilled_fraud_waits_from_when_it_is_read(
    tmp_path: Path,
) -> None:
    """The demo's backfill: its fraud is an hour old when the analyst reads it; its cases
    come after, so it is kept and charged back from when it was read, not dropped at once."""
    live, backfill = tmp_path / "truth.jsonl", tmp_path / "backfill.jsonl"
    genuine = json.loads(truth_line(["g1", "g2"]))
    live.write_text(json.dumps({**genuine, "fraud": False}) + "\n" + truth_line(["t1"]) + "\n")
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    backfill.write_text(truth_line(["old"], an_hour_ago) + "\n")
    truth = Truth(live, (backfill,))
    truth.follow()
    assert set(truth.fraud) == {"t1", "old"}
    assert truth.disposition({"txn_ids": ["g1", "g2"]}) == "not_fraud"
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    assert truth.chargebacks(now_ms) == [], "not charged back before its cases could close"
    assert truth.disposition({"txn_ids": ["old"]}) == "fraud", "still known"
    due_ms = now_ms + int(CHARGEBACK_DELAY_S * 1000) + 5_000
    assert sorted(truth.chargebacks(due_ms)) == ["old", "t1"]

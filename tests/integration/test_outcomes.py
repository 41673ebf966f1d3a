"""Labels into the archive and rules judged by them, on real Kafka and DynamoDB Local: a case
closed over HTTP, another closed with the CLI and a chargeback imported from a file reach the
labels topic and the archive, and a backtest, ``GET /outcomes`` and ``rules show`` report the
precision and recall those labels give."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.detection.rules import SEED_RULE
from infra.local.stack import LocalStack
from tests.cli import run_cli
from tests.factories import payment
from tests.integration.harness import Pipeline, http, keyed, produce, run, wait_until
from tests.integration.test_history import archiving, wait_for_rows

pytestmark = pytest.mark.integration

TOKEN = "outcomes-test-token"


def test_a_closed_case_and_a_chargeback_reach_the_archive_and_a_backtest_scores_the_rule(
    pipeline: Pipeline, stack: LocalStack, tmp_path: Path
) -> None:
    pipeline.enable_sink()
    root = archiving(pipeline)
    pipeline.extra_env["FRAUD_API_TOKEN"] = TOKEN
    uid = pipeline.uid
    start = int(time.time() * 1000) - 60_000
    # Two bursts the seed rule catches: one is fraud, one the card's owner (not fraud); and a
    # fraud no rule sees, which only a chargeback reveals.
    fraud = [
        payment(f"tok_f{uid}", f"{uid}-f{n}", "1500", ts_ms=start + n * 1000) for n in range(3)
    ]
    owner = [
        payment(f"tok_o{uid}", f"{uid}-o{n}", "2000", ts_ms=start + n * 1000) for n in range(3)
    ]
    missed = payment(f"tok_m{uid}", f"{uid}-missed", "80", ts_ms=start + 4000)
    quiet = [
        payment(f"tok_q{n}{uid}", f"{uid}-q{n}", "25", ts_ms=start + n * 100) for n in range(20)
    ]
    payments = [*fraud, *owner, missed, *quiet]
    worker = pipeline.worker("outcomes").start()
    since = datetime.fromtimestamp(start / 1000, tz=UTC).replace(minute=0, second=0, microsecond=0)
    asked = {"since": since.isoformat(), "until": (since + timedelta(days=1)).isoformat()}
    try:
        run(produce(stack.bootstrap, pipeline.payments, keyed(payments)))
        base = f"http://127.0.0.1:{worker.web_port}"

        def open_cases() -> list[dict[str, Any]]:
            status, body = http("GET", f"{base}/cases?status=open")
            assert status == 200, body
            return list(body["cases"])

        wait_until(lambda: len(open_cases()) == 2, 90, "a case for each burst")
        by_card = {case["group_key"]: case["case_id"] for case in open_cases()}
        closing = {"disposition": "fraud", "note": "customer denies it", "closed_by": "alice"}
        url = f"{base}/cases/{by_card[f'tok_f{uid}']}/close"
        status, body = http("POST", url, closing, token=TOKEN)
        assert status == 200, body
        closed = run_cli(
            [
                "cases",
                "close",
                by_card[f"tok_o{uid}"],
                "--disposition",
                "not_fraud",
                "--note",
                "owner confirmed",
                "--by",
                "bob",
            ],
            worker.env,
        )
        assert closed.returncode == 0, closed.stderr
        chargebacks = tmp_path / "chargebacks.csv"
        chargebacks.write_text(f"txn_id,date,reason\n{missed.txn_id},2026-12-01,not me\n")
        imported = run_cli(["labels", "import", str(chargebacks)], worker.env)
        assert imported.returncode == 0, imported.stderr

        # Each label reaches the archive, with what it labels.
        keys = wait_for_rows(root, "labels", "key", 3)
        assert sorted(keys) == sorted(
            [
                f"case:{by_card[f'tok_f{uid}']}",
                f"case:{by_card[f'tok_o{uid}']}",
                f"txn:{missed.txn_id}",
            ]
        )
        assert len(wait_for_rows(root, "payments", "txn_id", len(payments))) == len(payments)
        assert len(wait_for_rows(root, "alerts", "alert_id", 2)) == 2

        status, report = http("POST", f"{base}/rules/{SEED_RULE.rule_id}/backtest", asked, TOKEN)
        assert status == 200, report
        status, outcomes = http("GET", f"{base}/outcomes?days=1", token=TOKEN)
        assert status == 200, outcomes
        shown = run_cli(["rules", "show", SEED_RULE.rule_id], worker.env)
    finally:
        worker.stop()
        pipeline.drop_tables()

    expected = {
        "rule_id": SEED_RULE.rule_id,
        "rule_version": SEED_RULE.version,
        "status": "active",
        "alerts": 2,
        "cases": 2,
        "fraud_alerts": 1,
        "not_fraud_alerts": 1,
        "inconclusive_alerts": 0,
        "unlabelled_alerts": 0,
        "precision": 0.5,
        "fraud_payments": 4,  # the fraud burst's 3 (its case) and the chargeback's 1
        "fraud_payments_caught": 3,
        "missed_fraud_payments": 1,
        "recall": 0.75,
        "amount_caught": {"USD": "4500"},
    }
    assert report["alerts"] == 2 and report["outcomes"] == expected
    [live] = [o for o in outcomes["rules"] if o["rule_id"] == SEED_RULE.rule_id]
    assert live == expected
    assert (outcomes["caught_by_active_rules"], outcomes["missed_by_active_rules"]) == (3, 1)
    assert outcomes["labels"] == 3
    assert shown.returncode == 0, shown.stderr
    assert "precision 0.50 (1/2), recall 0.75 (3/4)" in shown.stdout

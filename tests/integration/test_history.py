"""The Parquet archive on real Kafka, and backtests of it through the CLI.

A worker with its archive on decides a generated stream; the archive then holds every
payment and alert exactly once (also across a SIGKILL), and a backtest of the seed rule
on it raises exactly the alert ids the worker raised live.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
import yaml

from app.detection.rules import SEED_RULE
from tests.integration.harness import (
    FAUST,
    REPO,
    Pipeline,
    alerts_on,
    free_port,
    keyed,
    produce,
    run,
)
from tests.integration.test_pipeline import generated_stream
from tests.integration.test_rules import http
from tests.oracle import oracle

pytestmark = pytest.mark.integration

TOKEN = "history-test-token"


def archived(root: Path, kind: str, column: str) -> list[str]:
    if not (root / kind).exists():
        return []
    return [
        str(row[0])
        for row in duckdb.sql(
            f"SELECT {column} FROM read_parquet('{root}/{kind}/**/*.parquet',"
            " hive_partitioning = true)"
        ).fetchall()
    ]


def wait_for_rows(
    root: Path, kind: str, column: str, count: int, timeout_s: float = 90
) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        rows = archived(root, kind, column)
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def archiving(pipeline: Pipeline) -> Path:
    pipeline.extra_env["FRAUD_ARCHIVE_ENABLED"] = "true"
    pipeline.extra_env["FRAUD_ARCHIVE_ROLL_SECONDS"] = "1"
    return Path(pipeline.extra_env.get("FRAUD_ARCHIVE_URL") or pipeline.tmp / "archive")


def test_the_archive_holds_every_payment_and_alert_and_a_backtest_repeats_the_live_alerts(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    root = archiving(pipeline)
    start_ms = int(time.time() * 1000) - 600_000
    payments, _ = generated_stream(3000, seed=41, start_ms=start_ms)
    expected = oracle(payments, SEED_RULE)
    pipeline.extra_env["FRAUD_API_TOKEN"] = TOKEN
    shadow = replace(SEED_RULE, rule_id="burst-shadow", status="shadow")
    pipeline.put_rules([shadow])
    worker = pipeline.worker().start()
    since = datetime.fromtimestamp(start_ms / 1000, tz=UTC).replace(minute=0, second=0)
    until = since + timedelta(days=1)
    try:
        run(produce(pipeline.stack.bootstrap, pipeline.payments, keyed(payments)))
        alerts = [a for a in alerts_on(pipeline, 2 * len(expected)) if a.status == "active"]
        txn_ids = wait_for_rows(root, "payments", "txn_id", len(payments))
        alert_ids = wait_for_rows(root, "alerts", "alert_id", 2 * len(alerts))
        url = f"http://127.0.0.1:{worker.web_port}/rules/{SEED_RULE.rule_id}/backtest"
        asked = {"since": since.isoformat(), "until": until.isoformat()}
        denied, _ = http("POST", url, asked)
        bad_range, problem = http("POST", url, {**asked, "since": "yesterday"}, TOKEN)
        status, over_http = http("POST", url, asked, TOKEN)
        evidence_url = f"http://127.0.0.1:{worker.web_port}/rules/burst-shadow/evidence"
        evidence_denied, _ = http("GET", evidence_url)
        evidence_status, evidence = http("GET", evidence_url, token=TOKEN)
        _, health = http("GET", f"http://127.0.0.1:{worker.web_port}/healthz")
    finally:
        worker.stop()

    assert health["archive"]["failing_s"] is None
    assert health["archive"]["rows"] >= len(payments) + len(alert_ids)
    assert denied == 401
    assert bad_range == 400 and "--since" in problem["error"]
    assert status == 200
    assert sorted(over_http["alert_ids"]) == sorted(a.alert_id for a in alerts)
    # The shadow rule's live alerts equal its backtest on the same payments; reading them
    # off the archive needs the token, as a backtest does.
    assert evidence_denied == 401
    assert evidence_status == 200
    assert evidence["live_alerts"] == evidence["backtest_alerts"] == len(alerts)

    assert sorted(txn_ids) == sorted(p.txn_id for p in payments), "each payment once"
    assert len(alert_ids) == len(set(alert_ids)) == 2 * len(alerts), "each alert once"
    rule_file = tmp_path / "seed.yaml"
    rule_file.write_text(yaml.safe_dump(SEED_RULE.to_json()))
    result = subprocess.run(
        [
            str(FAUST),
            "-A",
            "app",
            "rules",
            "backtest",
            str(rule_file),
            "--since",
            since.isoformat(),
            "--until",
            until.isoformat(),
        ],
        cwd=REPO,
        env=pipeline.env("cli", free_port()),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["payments_replayed"] == len(payments)
    assert sorted(report["alert_ids"]) == sorted(a.alert_id for a in alerts)
    assert report["same_alert_ids_as_live"] == len(alerts)
    assert "payments/s" in result.stderr


def test_a_sigkilled_archiver_loses_and_repeats_no_row(pipeline: Pipeline) -> None:
    root = archiving(pipeline)
    payments, _ = generated_stream(4000, seed=43, start_ms=int(time.time() * 1000) - 600_000)
    worker = pipeline.worker().start()
    try:
        run(produce(pipeline.stack.bootstrap, pipeline.payments, keyed(payments[:2000])))
        wait_for_rows(root, "payments", "txn_id", 1000)
        worker.kill()  # mid-stream: some files written, their offsets perhaps not committed
        run(produce(pipeline.stack.bootstrap, pipeline.payments, keyed(payments[2000:])))
        worker.start()
        txn_ids = wait_for_rows(root, "payments", "txn_id", len(payments))
        time.sleep(3)  # a replay that wrote a second copy would show up by now
        txn_ids = archived(root, "payments", "txn_id")
    finally:
        worker.stop()
    assert len(txn_ids) == len(set(txn_ids)) == len(payments)


def test_a_backtest_of_a_bad_rule_a_bad_range_or_no_archive_fails_naming_it(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    env = pipeline.env("cli", free_port())
    env["FRAUD_ARCHIVE_URL"] = str(tmp_path / "no-archive-here")
    good = tmp_path / "seed.yaml"
    good.write_text(yaml.safe_dump(SEED_RULE.to_json()))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**SEED_RULE.to_json(), "window": -5}))

    def backtest(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(FAUST), "-A", "app", "rules", "backtest", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    refused = backtest(str(bad), "--since", "2026-11-20", "--until", "2026-11-21")
    assert refused.returncode == 1 and "window" in refused.stderr
    backwards = backtest(str(good), "--since", "2026-11-21", "--until", "2026-11-20")
    assert backwards.returncode == 1 and "--until" in backwards.stderr
    garbled = backtest(str(good), "--since", "last week", "--until", "2026-11-20")
    assert garbled.returncode == 1 and "--since" in garbled.stderr
    missing = backtest(str(good), "--since", "2026-11-20", "--until", "2026-11-21")
    assert missing.returncode == 1 and "cannot read the archive" in missing.stderr

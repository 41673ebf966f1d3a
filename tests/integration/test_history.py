"""The Parquet archive on real Kafka, and backtests of it through the CLI.

A worker with its archive on decides a generated stream; the archive then holds every
payment and alert exactly once (also across a SIGKILL, a deleted archive group with the
topic's old records gone, and a group rewound behind its files, which all stay), and a
backtest of the seed rule on it raises exactly the alert ids the worker raised live.
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
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.protocol.admin import DeleteGroupsRequest
from aiokafka.structs import OffsetAndMetadata

from app.detection.models import Payment
from app.detection.rules import SEED_RULE
from app.history.files import Archive, ArchivedFile
from tests.integration.harness import (
    FAUST,
    REPO,
    Pipeline,
    Worker,
    alerts_on,
    free_port,
    http,
    keyed,
    produce,
    run,
    wait_until,
)
from tests.integration.test_pipeline import generated_stream
from tests.oracle import oracle

pytestmark = pytest.mark.integration

TOKEN = "history-test-token"


def no_files(root: Path, kind: str) -> bool:
    # DuckDB's read_parquet fails on a pattern that matches no file.
    return not any((root / kind).rglob("*.parquet"))


def archived(root: Path, kind: str, column: str) -> list[str]:
    if no_files(root, kind):
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
    payments, _ = generated_stream(3000, seed=41)
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
    payments, _ = generated_stream(4000, seed=43)
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


def sources(root: Path, kind: str) -> list[tuple[int, int]]:
    """The (partition, offset) each archived row of ``kind`` was read from, sorted."""
    if no_files(root, kind):
        return []
    rows = duckdb.sql(
        f"SELECT kafka_partition, kafka_offset FROM read_parquet('{root}/{kind}/**/*.parquet',"
        " hive_partitioning = true)"
    ).fetchall()
    return sorted((int(partition), int(offset)) for partition, offset in rows)


def file_paths(root: Path, kind: str) -> set[str]:
    return {f.path for f in Archive.at(str(root)).files(kind)}


def produced(
    pipeline: Pipeline, payments: list[Payment], batches: int = 1
) -> list[tuple[int, int]]:
    """Produce ``payments`` in ``batches``, each archived before the next (several rolls,
    so several files, per partition); their (partition, offset)s."""
    root = Path(pipeline.extra_env.get("FRAUD_ARCHIVE_URL") or pipeline.tmp / "archive")
    done = len(sources(root, "payments"))
    sent: list[tuple[int, int]] = []
    size = -(-len(payments) // batches)
    for start in range(0, len(payments), size):
        batch = payments[start : start + size]
        sent += [
            (m.partition, m.offset)
            for m in run(produce(pipeline.stack.bootstrap, pipeline.payments, keyed(batch)))
        ]
        wait_for_rows(root, "payments", "txn_id", done + len(sent))
    return sent


def archive_group(pipeline: Pipeline) -> str:
    return f"fraud-{pipeline.uid}-archive"


async def _delete_group(bootstrap: str, group: str) -> int:
    """Delete a consumer group (offsets and all), as ``kafka-consumer-groups --delete``
    does; the error code (0: deleted; 68: members left, as right after a stop)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        coordinator = await admin.find_coordinator(group)
        # aiokafka's admin client has the request but no method for it.
        response = await admin._send_request(DeleteGroupsRequest([group]), coordinator)
        [(_, error_code)] = response.results
        return int(error_code)
    finally:
        await admin.close()


def delete_group(pipeline: Pipeline, group: str) -> None:
    wait_until(
        lambda: run(_delete_group(pipeline.stack.bootstrap, group)) == 0,
        30,
        f"group {group} deleted",
    )


async def _expire(bootstrap: str, upto: dict[TopicPartition, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_records({tp: RecordsToDelete(offset) for tp, offset in upto.items()})
    finally:
        await admin.close()


async def _commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    """Set ``group``'s committed offsets, as ``kafka-consumer-groups --reset-offsets``
    does; the group must have no members."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit({tp: OffsetAndMetadata(n, "") for tp, n in offsets.items()})
    finally:
        await consumer.stop()


def stopped(worker: Worker) -> None:
    """A clean stop: its final roll archived and committed everything it read."""
    worker.stop()
    assert "rows not archived at stop" not in worker.log_text()


def test_a_deleted_archive_group_costs_no_file_and_repeats_no_row(pipeline: Pipeline) -> None:
    # Issue 19, point 7: the archive's group deleted (as when its offsets expire after a week
    # with the archive off, a new app id points at the same archive, or an operator deletes
    # it), and meanwhile retention removed the payments the archive holds. The archive used to
    # delete every file on the next start: its old payments were then gone for good.
    root = archiving(pipeline)
    payments, _ = generated_stream(3000, seed=47)
    worker = pipeline.worker().start()
    try:
        first = produced(pipeline, payments[:2000], batches=4)
    finally:
        stopped(worker)
    before = {kind: file_paths(root, kind) for kind in ("payments", "alerts")}
    assert len(before["payments"]) >= 2 * pipeline.partitions, "several files per partition"
    assert sources(root, "payments") == sorted(first)

    delete_group(pipeline, archive_group(pipeline))
    ends: dict[TopicPartition, int] = {}
    for partition, offset in first:
        tp = TopicPartition(pipeline.payments, partition)
        ends[tp] = max(ends.get(tp, 0), offset + 1)
    run(_expire(pipeline.stack.bootstrap, ends))

    worker.start()
    try:
        second = produced(pipeline, payments[2000:])
        time.sleep(3)  # a replay that wrote a second copy would show up by now
        alerts_after = sources(root, "alerts")
    finally:
        stopped(worker)

    for kind in ("payments", "alerts"):
        missing = before[kind] - file_paths(root, kind)
        assert not missing, f"{len(missing)} of {len(before[kind])} {kind} files deleted"
    assert sources(root, "payments") == sorted(first + second), "each payment once"
    assert len(alerts_after) == len(set(alerts_after)), "each alert once"


def test_an_archive_group_rewound_behind_its_files_loses_and_repeats_no_row(
    pipeline: Pipeline,
) -> None:
    # What a worker that died after writing a roll's files and before committing them leaves
    # (partitions 0 and 1: the group committed up to the start of the last file), and what
    # an operator's reset by time leaves (2 and 3: a committed offset inside a file).
    root = archiving(pipeline)
    payments, _ = generated_stream(3000, seed=53)
    worker = pipeline.worker().start()
    try:
        first = produced(pipeline, payments[:2000], batches=3)
    finally:
        stopped(worker)
    before = file_paths(root, "payments")
    last: dict[int, ArchivedFile] = {}
    for f in Archive.at(str(root)).files("payments"):
        if f.partition not in last or f.first > last[f.partition].first:
            last[f.partition] = f
    assert sorted(last) == list(range(pipeline.partitions))
    rewound = {
        TopicPartition(pipeline.payments, p): f.first if p < 2 else (f.first + f.last) // 2 + 1
        for p, f in last.items()
    }
    assert all(
        last[tp.partition].first < n <= last[tp.partition].last
        for tp, n in rewound.items()
        if tp.partition >= 2
    ), "inside the file"
    run(_commit(pipeline.stack.bootstrap, archive_group(pipeline), rewound))

    worker.start()
    try:
        second = produced(pipeline, payments[2000:])
        time.sleep(3)  # a replay that wrote a second copy would show up by now
    finally:
        stopped(worker)

    assert sources(root, "payments") == sorted(first + second), "each payment once"
    assert before <= file_paths(root, "payments"), "no file deleted"


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

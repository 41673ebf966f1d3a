"""The DynamoDB sink in a real worker, against real Kafka and DynamoDB Local.

Alerts are produced straight onto the pipeline's alerts topic (keyed by alert_id, as the
detector does); the table is read back with scans and its DynamoDB stream, and the
worker's committed offsets are read from Kafka to show what it has let go of.
"""

from __future__ import annotations

import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from app.detection.models import Alert, alert_id_for, iso_from_ms
from infra.local.stack import LocalStack
from lambdas.notifier.models.alert import alert_from_image
from tests.integration.harness import Pipeline, Worker, produce, run, wait_until

pytestmark = pytest.mark.integration

DAY_S = 86400


@dataclass
class SinkSetup:
    pipeline: Pipeline
    stack: LocalStack
    table: str
    stream_arn: str

    @property
    def group(self) -> str:
        return f"fraud-{self.pipeline.uid}"  # Faust's consumer group is the app id

    def rows(self) -> dict[str, dict[str, Any]]:
        client = self.stack.client()
        rows: dict[str, dict[str, Any]] = {}
        kwargs: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True}
        while True:
            page = client.scan(**kwargs)
            for item in page["Items"]:
                rows[item["alert_id"]["S"]] = item
            if "LastEvaluatedKey" not in page:
                return rows
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def row_count(self) -> int:
        client = self.stack.client()
        kwargs: dict[str, Any] = {"TableName": self.table, "Select": "COUNT"}
        total = 0
        while True:
            page = client.scan(**kwargs)
            total += int(page["Count"])
            if "LastEvaluatedKey" not in page:
                return total
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def stream_events(self) -> Counter[str]:
        """INSERT/MODIFY/REMOVE counts on the table's stream: what the notifier would see."""
        streams = self.stack.client("dynamodbstreams")
        names: Counter[str] = Counter()
        shards: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"StreamArn": self.stream_arn}
        while True:
            description = streams.describe_stream(**kwargs)["StreamDescription"]
            shards.extend(description["Shards"])
            if not description.get("LastEvaluatedShardId"):
                break
            kwargs["ExclusiveStartShardId"] = description["LastEvaluatedShardId"]
        for shard in shards:
            iterator = streams.get_shard_iterator(
                StreamArn=self.stream_arn,
                ShardId=shard["ShardId"],
                ShardIteratorType="TRIM_HORIZON",
            ).get("ShardIterator")
            while iterator:
                page = streams.get_records(ShardIterator=iterator, Limit=1000)
                if not page["Records"]:
                    break
                names.update(record["eventName"] for record in page["Records"])
                iterator = page.get("NextShardIterator")
        return names

    def committed(self) -> int:
        """Offsets the worker's group has committed on the alerts topic, summed."""

        async def fetch() -> int:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.stack.bootstrap)
            await admin.start()
            try:
                offsets = await admin.list_consumer_group_offsets(self.group)
            finally:
                await admin.close()
            return sum(
                max(0, meta.offset)
                for tp, meta in offsets.items()
                if tp.topic == self.pipeline.alerts
            )

        total: int = run(fetch())
        return total

    def produce(self, alerts: list[Alert], rate: float | None = None) -> None:
        records = [(a.alert_id.encode(), a.to_json()) for a in alerts]
        run(produce(self.stack.bootstrap, self.pipeline.alerts, records, rate=rate))


@pytest.fixture
def sink(pipeline: Pipeline, stack: LocalStack) -> Iterator[SinkSetup]:
    arn = pipeline.enable_sink()
    yield SinkSetup(pipeline, stack, pipeline.alerts_table, arn)
    pipeline.drop_tables()


@pytest.fixture
def worker(sink: SinkSetup) -> Iterator[Worker]:
    running = sink.pipeline.worker("sink").start()
    yield running
    running.stop()


def make_alerts(n: int, tag: str | None = None) -> list[Alert]:
    tag = tag or uuid.uuid4().hex[:6]
    now_ms = int(time.time() * 1000)
    alerts = []
    for i in range(n):
        txn_ids = [f"{tag}-{i}-{k}" for k in range(3)]
        key = f"card-{tag}-{i % 97}"
        alerts.append(
            Alert(
                alert_id=alert_id_for("sink-test", 1, key, txn_ids),
                rule_id="sink-test",
                rule_version=1,
                status="active" if i % 5 else "shadow",
                group_by="card_id",
                group_key=key,
                txn_ids=tuple(txn_ids),
                amounts=("1000.00", "1500", "2000.50"),
                countries=("DE", "FR", "DE"),
                aggregate_value="3",
                first_event_ts=iso_from_ms(now_ms - 60_000),
                last_event_ts=iso_from_ms(now_ms - 1_000),
                # Spread over a day and a bit, every millisecond value distinct.
                detected_at=iso_from_ms(now_ms - i * 97_123),
                trigger_txn_id=txn_ids[-1],
                trigger_produced_at_ms=now_ms,
                severity="high",
                description="sink integration test",
            )
        )
    return alerts


def epoch_s(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp())


def test_alerts_are_written_once_with_ttl_and_a_replay_rewrites_nothing(
    sink: SinkSetup, worker: Worker
) -> None:
    alerts = make_alerts(600)
    by_id = {a.alert_id: a for a in alerts}
    assert len(by_id) == 600

    sink.produce(alerts)
    wait_until(lambda: sink.row_count() >= 600, 90, "600 rows")
    wait_until(lambda: sink.committed() == 600, 30, "offsets committed to the end")
    rows = sink.rows()
    assert set(rows) == set(by_id)
    for alert_id, row in rows.items():
        alert = by_id[alert_id]
        assert int(row["expires_at"]["N"]) == epoch_s(alert.detected_at) + DAY_S
        parsed = alert_from_image(row)  # what the notifier will read
        assert (parsed.txn_ids, parsed.status, parsed.detected_at, parsed.rule_version) == (
            alert.txn_ids,
            alert.status,
            alert.detected_at,
            alert.rule_version,
        )
        assert row["trigger_txn_id"]["S"] == alert.trigger_txn_id
    written = sorted(int(row["written_at_ms"]["N"]) for row in rows.values())
    span_s = max(0.001, (written[-1] - written[0]) / 1000)
    print(f"\nsink throughput: 600 rows in {span_s:.2f} s = {600 / span_s:.0f} rows/s")
    url = f"http://127.0.0.1:{worker.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        exported = response.read().decode()
    assert "fraud_sink_written_total 600.0" in exported, "the running sink's counters"

    # Replay: the same 600 alerts again. The worker consumes them (its offsets reach the
    # new end) and the table neither grows nor changes.
    sink.produce(alerts)
    wait_until(lambda: sink.committed() == 1200, 90, "the replay consumed and committed")
    replayed = sink.rows()
    assert len(replayed) == 600
    assert {k: v["written_at_ms"] for k, v in replayed.items()} == {
        k: v["written_at_ms"] for k, v in rows.items()
    }
    # The stream, which is what the notifier sees: one INSERT per alert, no MODIFY.
    events = sink.stream_events()
    assert events == Counter({"INSERT": 600}), events
    assert worker.process is not None and worker.process.poll() is None


def test_dynamodb_outage_mid_stream_loses_and_duplicates_nothing(
    sink: SinkSetup, worker: Worker
) -> None:
    alerts = make_alerts(600)
    producer_error: list[BaseException] = []

    def producer() -> None:
        try:
            sink.produce(alerts, rate=40.0)  # ~15 s of alerts
        except BaseException as exc:  # surfaced by the assertion below
            producer_error.append(exc)

    thread = threading.Thread(target=producer, name="alert-producer")
    thread.start()
    try:
        wait_until(lambda: sink.row_count() >= 50, 30, "the first rows")
        sink.stack.stop_dynamodb()
        stopped_at = time.monotonic()
        # While the table is down, alerts keep arriving but no offset moves past them.
        time.sleep(3.0)
        committed_early = sink.committed()
        time.sleep(max(0.0, stopped_at + 10.0 - time.monotonic()))
        committed_late = sink.committed()
    finally:
        sink.stack.start_dynamodb()
    assert committed_late == committed_early
    assert committed_early < 600

    thread.join(60)
    assert not thread.is_alive() and not producer_error, producer_error
    wait_until(lambda: sink.row_count() >= 600, 90, "all 600 rows after the outage")
    wait_until(lambda: sink.committed() == 600, 30, "offsets committed to the end")
    rows = sink.rows()
    assert set(rows) == {a.alert_id for a in alerts}
    assert sink.stream_events() == Counter({"INSERT": 600})  # nothing written twice

    assert worker.process is not None and worker.process.poll() is None
    text = worker.log_text()
    assert "dynamodb sink:" in text and "not written to" in text, text[-3000:]
    assert "recovered" in text


def test_offsets_are_not_committed_past_unwritten_alerts_across_a_graceful_stop(
    sink: SinkSetup, worker: Worker
) -> None:
    """A worker stopped (SIGTERM: it commits on the way out) while the table is down
    must leave its alerts uncommitted, so the next worker writes them all."""
    alerts = make_alerts(120)
    sink.stack.stop_dynamodb()
    try:
        sink.produce(alerts)
        worker.wait_for_log("not written to", 30)
        time.sleep(2.5)  # more than two commit intervals
        assert sink.committed() == 0
        worker.stop()
        assert worker.process is not None and worker.process.returncode is not None
        assert sink.committed() == 0
    finally:
        sink.stack.start_dynamodb()
    second = sink.pipeline.worker("sink-2").start()
    try:
        wait_until(lambda: sink.row_count() >= 120, 60, "all rows from the second worker")
        wait_until(lambda: sink.committed() == 120, 30, "offsets committed to the end")
    finally:
        second.stop()
    assert set(sink.rows()) == {a.alert_id for a in alerts}

"""Real workers and real Kafka for integration tests: start, kill, produce, read back."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.detection.models import Alert
from app.detection.rules import Rule
from app.rules_admin.topic import publish
from infra.local.stack import LocalStack, Topic

REPO = Path(__file__).resolve().parents[2]
FAUST = Path(sys.executable).parent / "faust"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Pipeline:
    """One isolated deployment: its own topics, consumer group and state directories."""

    stack: LocalStack
    tmp: Path
    partitions: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)
    uid: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def payments(self) -> str:
        return f"payments.raw.{self.uid}"

    @property
    def alerts(self) -> str:
        return f"fraud.alerts.{self.uid}"

    @property
    def dlq(self) -> str:
        return f"payments.dlq.{self.uid}"

    @property
    def rules(self) -> str:
        return f"fraud.rules.{self.uid}"

    @property
    def labels(self) -> str:
        return f"fraud.labels.{self.uid}"

    @property
    def lists(self) -> str:
        return f"fraud.lists.{self.uid}"

    @property
    def suppressions(self) -> str:
        return f"fraud.suppressions.{self.uid}"

    def create_topics(self) -> None:
        self.stack.create_topics(
            [
                Topic(self.payments, self.partitions),
                Topic(self.alerts, self.partitions),
                Topic(self.dlq, self.partitions),
                Topic(self.rules, 1, {"cleanup.policy": "compact"}),
                Topic(self.labels, 1, {"cleanup.policy": "compact"}),
                Topic(self.lists, 1, {"cleanup.policy": "compact"}),
                Topic(self.suppressions, 1, {"cleanup.policy": "compact"}),
            ]
        )

    @property
    def alerts_table(self) -> str:
        return f"alerts_{self.uid}"

    @property
    def cases_table(self) -> str:
        return f"cases_{self.uid}"

    def enable_sink(self) -> str:
        """Create this deployment's alerts and cases tables and run the sink in its workers;
        returns the alerts table's stream ARN."""
        arn = self.stack.create_alerts_table(self.alerts_table)
        self.stack.create_cases_table(self.cases_table)
        self.extra_env.update(
            {
                "FRAUD_DYNAMODB_TABLE": self.alerts_table,
                "FRAUD_CASES_TABLE": self.cases_table,
                "FRAUD_SINK_ENABLED": "true",
            }
        )
        return arn

    def drop_tables(self) -> None:
        for table in (self.alerts_table, self.cases_table):
            self.stack.client().delete_table(TableName=table)

    def put_rules(self, rules: Sequence[Rule]) -> None:
        """Publish rules the way the CLI does (the topic is the only way in)."""
        run(publish(self.stack.bootstrap, self.rules, [(r.rule_id, r.to_bytes()) for r in rules]))

    def env(self, name: str, web_port: int) -> dict[str, str]:
        return {
            **os.environ,
            **self.stack.env(),
            "FRAUD_APP_ID": f"fraud-{self.uid}",
            "FRAUD_DATADIR": str(self.tmp / f"data-{name}"),
            "FRAUD_WEB_PORT": str(web_port),
            "FRAUD_PARTITIONS": str(self.partitions),
            "FRAUD_TOPIC_PAYMENTS": self.payments,
            "FRAUD_TOPIC_ALERTS": self.alerts,
            "FRAUD_TOPIC_DLQ": self.dlq,
            "FRAUD_TOPIC_RULES": self.rules,
            "FRAUD_TOPIC_LABELS": self.labels,
            "FRAUD_TOPIC_LISTS": self.lists,
            "FRAUD_TOPIC_SUPPRESSIONS": self.suppressions,
            # Only the sink's own tests create an alerts table; the others leave it off.
            "FRAUD_SINK_ENABLED": "false",
            # Likewise the archive: on in its own tests (test_history), where it goes here.
            "FRAUD_ARCHIVE_ENABLED": "false",
            "FRAUD_ARCHIVE_URL": str(self.tmp / "archive"),
            **self.extra_env,
        }

    def worker(self, name: str = "w1") -> Worker:
        port = free_port()
        return Worker(name, self.env(name, port), port, self.tmp / f"worker-{name}.log")


class Worker:
    """A ``faust -A app worker`` subprocess, in its own process group."""

    def __init__(self, name: str, env: dict[str, str], web_port: int, log_path: Path) -> None:
        self.name, self.env, self.web_port, self.log_path = name, env, web_port, log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def start(self, ready_timeout: float = 90.0) -> Worker:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(FAUST), "-A", "app", "worker", "-l", "info"],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_for_log("Worker ready", ready_timeout)
        return self

    def log_text(self) -> str:
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            return log.read().decode(errors="replace")

    def wait_for_log(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text():
                return
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"worker {self.name} exited:\n{self.log_text()[-4000:]}")
            time.sleep(0.2)
        raise AssertionError(
            f"worker {self.name}: no {needle!r} in {timeout} s:\n{self.log_text()[-4000:]}"
        )

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stats(self) -> dict[str, Any]:
        """The worker's ``/stats`` body."""
        url = f"http://127.0.0.1:{self.web_port}/stats/"
        with urllib.request.urlopen(url, timeout=5) as response:
            body: dict[str, Any] = json.load(response)
            return body

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def http(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    """(status, JSON body) of one request; an HTTP error's body is read as JSON too."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None]],
    rate: float | None = None,
) -> list[Any]:
    """Send (key, value) records in order; returns their RecordMetadata."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    started, sent, futures = time.monotonic(), 0, []
    try:
        for key, value in records:
            futures.append(await producer.send(topic, value, key=key))
            sent += 1
            if rate is not None and sent % 50 == 0:
                await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))
        return [await f for f in futures]
    finally:
        await producer.stop()


async def read_all(
    bootstrap: str,
    topic: str,
    partitions: int,
    idle_s: float = 2.0,
    timeout_s: float = 60.0,
    until: int | None = None,
    isolation: str = "read_uncommitted",
) -> list[Any]:
    """``topic`` from the beginning, until ``until`` records or ``idle_s`` of silence."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=isolation,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            fresh = [m for msgs in batch.values() for m in msgs]
            if fresh:
                records.extend(fresh)
                last_new = time.monotonic()
            elif until is None and time.monotonic() - last_new > idle_s:
                break
            if until is not None and len(records) >= until and time.monotonic() - last_new > idle_s:
                break
        return records
    finally:
        await consumer.stop()


def alerts_on(
    pipeline: Pipeline,
    expected: int,
    idle_s: float = 3.0,
    timeout_s: float = 240.0,
    isolation: str = "read_uncommitted",
) -> list[Alert]:
    """The alerts on the pipeline's topic, once ``expected`` have come and ``idle_s`` passed."""
    records = run(
        read_all(
            pipeline.stack.bootstrap,
            pipeline.alerts,
            pipeline.partitions,
            until=expected,
            idle_s=idle_s,
            timeout_s=timeout_s,
            isolation=isolation,
        )
    )
    return [Alert.from_json(r.value) for r in records]


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def keyed(payments: Sequence[Any]) -> list[tuple[bytes | None, bytes | None]]:
    return [(p.card_id.encode(), p.to_json()) for p in payments]

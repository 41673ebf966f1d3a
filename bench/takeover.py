"""How long partitions go unserved when workers leave, die and join.

``python -m bench.takeover [--rate 200] [--repeat 2]`` starts real Kafka (4 partitions) and two
workers, publishes a rule that alerts on *every* payment (so each payment's decision time is on
the alerts topic), offers payments at a steady rate and then, in turn:

1. stops worker A gracefully (SIGTERM): its partitions move to B;
2. starts A again: partitions move back;
3. kills worker B (SIGKILL): A takes B's partitions once the session times out;
4. starts B again.

For each step it reports the worst and the p99 decision latency (Kafka produce timestamp of a
payment to its alert's ``detected_at``) of the payments produced from one second before the
step to one second before the next: the worst is how long some partition went unserved. Prints a
table and writes ``bench/results/takeover.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.detection.keys import card_partition
from app.detection.models import Alert, Payment, iso_from_ms
from app.detection.rules import parse_rule
from app.rules_admin.topic import publish
from bench.pipeline import free_port
from infra.local.stack import LocalStack, Topic

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
PARTITIONS = 4
SETTLE_S = 12.0  # between steps: long enough for the group to settle and catch up
EVERY_PAYMENT = parse_rule(
    {
        "rule_id": "every-payment",
        "version": 1,
        "description": "alerts on every payment, so each decision time is visible",
        "window": 1,
        "threshold": {"op": ">=", "value": 1},
        "severity": "low",
    }
)


@dataclass
class WorkerProcess:
    name: str
    env: dict[str, str]
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).parent / "faust"), "-A", "app", "worker", "-l", "info"],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def ready(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.port}/readyz"
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def health(self) -> int | None:
        """/healthz's status code, None when the worker does not answer."""
        try:
            url = f"http://127.0.0.1:{self.port}/healthz"
            with urllib.request.urlopen(url, timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return None

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            if sig == signal.SIGKILL:
                self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)


def payment(index: int, ts_ms: int) -> Payment:
    return Payment(
        txn_id=f"t{index}",
        card_id=f"tok_{index % 512}",
        account_id=f"a{index % 512}",
        amount=Decimal("10"),
        currency="EUR",
        merchant_id="m",
        mcc="5411",
        country="DE",
        device_id="d",
        ip="10.0.0.1",
        ts=iso_from_ms(ts_ms),
        ts_ms=ts_ms,
    )


async def offer(bootstrap: str, topic: str, rate: float, stop: asyncio.Event) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1, acks=1)
    await producer.start()
    started, sent = time.time(), 0
    try:
        while not stop.is_set():
            due = int((time.time() - started) * rate)
            while sent < due:
                p = payment(sent, int(time.time() * 1000))
                await producer.send(topic, p.to_json(), key=p.card_id.encode())
                sent += 1
            await asyncio.sleep(0.005)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def read_alerts(bootstrap: str, topic: str, expected: int) -> list[Alert]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        alerts: dict[str, Alert] = {}
        deadline = time.monotonic() + 120
        while len(alerts) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                for message in messages:
                    alert = Alert.from_json(message.value)
                    # A replay may repeat an alert; its first decision is the one that counts.
                    alerts.setdefault(alert.trigger_txn_id, alert)
        return list(alerts.values())
    finally:
        await consumer.stop()


def latency_ms(alert: Alert) -> float:
    detected = datetime.fromisoformat(alert.detected_at).timestamp() * 1000
    return max(0.0, detected - alert.trigger_produced_at_ms)


def measure(stack: LocalStack, rate: float, workdir: Path, run: int) -> list[dict[str, Any]]:
    uid = f"takeover-{run}-{int(time.time())}"
    topics = {
        "FRAUD_TOPIC_PAYMENTS": f"{uid}.payments",
        "FRAUD_TOPIC_ALERTS": f"{uid}.alerts",
        "FRAUD_TOPIC_DLQ": f"{uid}.dlq",
        "FRAUD_TOPIC_RULES": f"{uid}.rules",
    }
    stack.create_topics([Topic(name, PARTITIONS) for name in topics.values()])
    asyncio.run(
        publish(
            stack.bootstrap,
            topics["FRAUD_TOPIC_RULES"],
            [("every-payment", EVERY_PAYMENT.to_bytes())],
        )
    )
    workers = []
    for name in ("A", "B"):
        port = free_port()
        env = {
            **os.environ,
            **stack.env(),
            **topics,
            "FRAUD_APP_ID": uid,
            "FRAUD_WEB_PORT": str(port),
            "FRAUD_DATADIR": str(workdir / f"{uid}-{name}"),
            "FRAUD_SINK_ENABLED": "false",
        }
        workers.append(WorkerProcess(name, env, port, workdir / f"{uid}-{name}.log"))
    a, b = workers
    steps: list[tuple[str, float]] = []

    async def scenario() -> int:
        stop = asyncio.Event()
        producing = asyncio.create_task(
            offer(stack.bootstrap, topics["FRAUD_TOPIC_PAYMENTS"], rate, stop)
        )

        async def step(label: str, action: Any) -> None:
            steps.append((label, time.time()))
            # In a thread: a graceful stop waits for the worker to exit (its archive's last
            # roll included), and payments must go on being offered meanwhile, or the
            # partitions it left unserved would see none.
            await asyncio.to_thread(action)
            await asyncio.sleep(SETTLE_S)

        async def until_ready(worker: WorkerProcess) -> None:
            deadline = time.monotonic() + 90
            while not await asyncio.to_thread(worker.ready):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker {worker.name} not ready; see {worker.log}")
                await asyncio.sleep(0.2)

        a.start()
        b.start()
        await until_ready(a)
        await until_ready(b)
        await asyncio.sleep(SETTLE_S)
        await step("graceful stop (SIGTERM) of one of two workers", a.stop)
        await step("a worker joins (partitions move back)", a.start)
        await step("SIGKILL of one of two workers", lambda: b.signal(signal.SIGKILL))
        await step("a killed worker restarts and joins", b.start)
        stop.set()
        return await producing

    try:
        sent = asyncio.run(scenario())
        alerts = asyncio.run(read_alerts(stack.bootstrap, topics["FRAUD_TOPIC_ALERTS"], sent))
        health = {worker.name: worker.health() for worker in workers}
    finally:
        for worker in workers:
            worker.stop()
    decided = {alert.trigger_txn_id for alert in alerts}
    undecided = [i for i in range(sent) if f"t{i}" not in decided]
    rows = []
    ends = [at for _, at in steps[1:]] + [steps[-1][1] + SETTLE_S]
    for (label, at), end in zip(steps, ends, strict=True):
        # The payments produced from just before this step to just before the next one.
        window = [
            latency_ms(alert)
            for alert in alerts
            if at - 1.0 <= alert.trigger_produced_at_ms / 1000 < end - 1.0
        ]
        window.sort()
        rows.append(
            {
                "step": label,
                "run": run,
                "payments": len(window),
                "p50_ms": round(window[len(window) // 2], 1) if window else None,
                "p99_ms": round(window[int(len(window) * 0.99)], 1) if window else None,
                "unserved_ms": round(window[-1], 1) if window else None,
            }
        )
    rows.append(
        {
            "step": "all payments decided",
            "run": run,
            "payments": len(alerts),
            "sent": sent,
            # Where undecided payments sit (a stalled partition) and what /healthz said then.
            "undecided_partitions": sorted(
                {card_partition(payment(i, 0).card_id, PARTITIONS) for i in undecided}
            ),
            "healthz": health,
            "p50_ms": None,
            "p99_ms": None,
            "unserved_ms": None,
        }
    )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| run | step | payments | p50 ms | p99 ms | worst (unserved) ms |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row["unserved_ms"] is None:
            lines.append(
                f"| {row['run']} | {row['step']} | {row['payments']} of {row.get('sent')}"
                f" (undecided in partitions {row.get('undecided_partitions')};"
                f" /healthz {row.get('healthz')}) | | | |"
            )
            continue
        lines.append(
            f"| {row['run']} | {row['step']} | {row['payments']} | {row['p50_ms']}"
            f" | {row['p99_ms']} | {row['unserved_ms']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.takeover", description=__doc__)
    # Every payment alerts and the agent awaits each alert's acknowledgement, so keep the rate
    # well inside one worker's alert capacity: the numbers are to show gaps, not throughput.
    parser.add_argument("--rate", type=float, default=50.0, help="payments/s offered")
    parser.add_argument("--repeat", type=int, default=2, help="how many runs of the four steps")
    parser.add_argument("--output", type=Path, default=RESULTS / "takeover.json")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="fraud-takeover-"))
    print(f"worker logs in {tmp}", flush=True)
    rows: list[dict[str, Any]] = []
    with LocalStack(kafka=True, dynamodb=False, partitions=PARTITIONS) as stack:
        for run in range(1, args.repeat + 1):
            rows.extend(measure(stack, args.rate, tmp, run))
            print(table(rows), flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {"cores": os.cpu_count(), "rate": args.rate, "partitions": PARTITIONS, "rows": rows},
            indent=2,
        )
    )
    print(f"\n{os.cpu_count()} cores, {args.rate:g} payments/s, {PARTITIONS} partitions\n")
    print(table(rows))


if __name__ == "__main__":
    main()

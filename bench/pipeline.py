"""Capacity on a backlog and latency at offered rates, Faust worker vs a bare aiokafka pipe.

``python -m bench.pipeline`` starts real Kafka (4 partitions) and measures:

* **capacity**: ``--backlog`` payments (default 500 000) produced before a fresh worker
  starts; payments decided per second from its first decision to its last, and the
  worker's CPU seconds per 100 000 payments, once per rule file in ``--capacity-rules``
  (default: the seed rule alone, then the shipped default rules);
* **latency**: the generator offering ``--rates`` for ``--duration`` seconds each to a fresh
  worker, ``--repeat`` times per rate (Faust's fetch timing once made runs bimodal, so one
  run proves little): decision latency (the payment's produce timestamp to its state being
  written, in the worker's HdrHistogram) and alert latency (the payment's produce timestamp
  to the alert's append on ``fraud.alerts``, whose topic stamps LogAppendTime); then the
  bare pipe (consume, decode, produce) once per rate on the same broker.

Tables are printed; the raw numbers go to ``bench/results/pipeline.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import murmur2
from hdrh.histogram import HdrHistogram

from app.generator import PaymentGenerator
from app.rules_admin.topic import load_rule_file, publish
from app.worker.stats import new_histogram, percentiles_ms
from infra.local.stack import LocalStack, Topic

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
PARTITIONS = 4
SEED_RULES = REPO / "bench" / "seed_only.yaml"
DEFAULT_RULES = REPO / "app" / "rules_admin" / "default_rules.yaml"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WARM_UP = 5_000  # payments decided before a latency run's measured part


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fetch_stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats/", timeout=5) as response:
        body: dict[str, Any] = json.load(response)
        return body


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def payloads_for(count: int) -> list[tuple[bytes, bytes]]:
    generator = PaymentGenerator(seed=3, cards=20_000, fraud_ratio=0.005)
    now = int(time.time() * 1000)
    return [(p.card_id.encode(), p.to_json()) for p, _ in generator.history(count, now, 1)]


async def offer(
    bootstrap: str, topic: str, payloads: list[tuple[bytes, bytes]], rate: float | None
) -> float:
    """Send at ``rate``/s in 5 ms slices (None: as fast as possible); returns the start.

    Each slice goes out as one batch per partition (keys partitioned as Kafka's default
    partitioner does): the load generator shares the 2 cores with the broker and the
    workers, and one ``send`` per payment cost it half a core at 10 000/s.
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, max_batch_size=1024 * 1024)
    await producer.start()
    partitions = sorted(await producer.partitions_for(topic))
    started = time.time()
    try:
        sent = 0
        while sent < len(payloads):
            due = len(payloads) if rate is None else int((time.time() - started + 0.005) * rate)
            due = min(len(payloads), max(due, sent), sent + 20_000)
            await send_slice(producer, topic, partitions, payloads[sent:due])
            sent = due
            if rate is not None:
                await asyncio.sleep(0.005)
        await producer.flush()
    finally:
        await producer.stop()
    return started


async def send_slice(
    producer: AIOKafkaProducer,
    topic: str,
    partitions: list[int],
    payloads: list[tuple[bytes, bytes]],
) -> None:
    batches: dict[int, Any] = {}
    pending = []
    for key, value in payloads:
        partition = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
        batch = batches.get(partition)
        if batch is None:
            batch = batches[partition] = producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it
            batch.close()
            pending.append(await producer.send_batch(batch, topic, partition=partition))
            batch = batches[partition] = producer.create_batch()
            batch.append(key=key, value=value, timestamp=None)
    for partition, batch in batches.items():
        batch.close()
        pending.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*pending)


async def alert_latency(bootstrap: str, topic: str, since_ms: int) -> HdrHistogram:
    """Every alert's append time (LogAppendTime) minus its trigger payment's produce time,
    for alerts whose trigger was produced from ``since_ms`` on."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    histogram = new_histogram()
    await consumer.start()
    try:
        while batch := await consumer.getmany(timeout_ms=2000):
            for records in batch.values():
                for record in records:
                    produced = json.loads(record.value).get("trigger_produced_at_ms") or 0
                    if produced >= since_ms:
                        histogram.record_value(max(1, (record.timestamp - produced) * 1000))
    finally:
        await consumer.stop()
    return histogram


@dataclass
class Run:
    """Fresh topics and a rules topic holding ``rules`` for one measurement."""

    stack: LocalStack
    uid: str
    rules: Path

    @property
    def topics(self) -> dict[str, str]:
        return {
            "FRAUD_TOPIC_PAYMENTS": f"{self.uid}.payments",
            "FRAUD_TOPIC_ALERTS": f"{self.uid}.alerts",
            "FRAUD_TOPIC_DLQ": f"{self.uid}.dlq",
            "FRAUD_TOPIC_RULES": f"{self.uid}.rules",
        }

    def create(self) -> None:
        topics = self.topics
        self.stack.create_topics(
            [Topic(name, PARTITIONS) for key, name in topics.items() if key != "FRAUD_TOPIC_ALERTS"]
            + [
                Topic(
                    topics["FRAUD_TOPIC_ALERTS"],
                    PARTITIONS,
                    {"message.timestamp.type": "LogAppendTime"},
                )
            ]
        )
        records: list[tuple[str, bytes | None]] = [
            (r.rule_id, r.to_bytes()) for r in load_rule_file(self.rules)
        ]
        asyncio.run(publish(self.stack.bootstrap, topics["FRAUD_TOPIC_RULES"], records))


# --archive: the workers also run the Parquet archive (set once by main).
ARCHIVE = [False]
# --profile DIR: py-spy samples each capacity worker into DIR (set once by main).
PROFILE: list[Path | None] = [None]


@contextmanager
def workers(run: Run, count: int, workdir: Path) -> Iterator[list[tuple[int, int]]]:
    """``count`` fresh workers on the run's topics; yields (web port, pid) per worker."""
    ports = [free_port() for _ in range(count)]
    processes = []
    for index, port in enumerate(ports):
        env = {
            **os.environ,
            **run.stack.env(),
            **run.topics,
            "FRAUD_APP_ID": run.uid,
            "FRAUD_PARTITIONS": str(PARTITIONS),
            "FRAUD_WEB_PORT": str(port),
            "FRAUD_DATADIR": str(workdir / f"{run.uid}-{index}"),
            # Alerts are measured on their topic; the DynamoDB sink is not part of this.
            "FRAUD_SINK_ENABLED": "false",
            # Off unless --archive: the reference runs had no archive, and the
            # archive is measured on its own (bench.backtest).
            "FRAUD_ARCHIVE_ENABLED": "true" if ARCHIVE[0] else "false",
            "FRAUD_ARCHIVE_URL": str(workdir / f"{run.uid}-archive"),
        }
        log = (workdir / f"{run.uid}-{index}.log").open("wb")
        processes.append(
            subprocess.Popen(
                [str(Path(sys.executable).parent / "faust"), "-A", "app", "worker", "-l", "warn"],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    try:
        deadline = time.time() + 90
        for port, process in zip(ports, processes, strict=True):
            while True:
                try:
                    fetch_stats(port)
                    break
                except OSError:
                    if time.time() > deadline or process.poll() is not None:
                        raise RuntimeError(f"worker did not start; see {workdir}") from None
                    time.sleep(0.5)
        yield [(port, process.pid) for port, process in zip(ports, processes, strict=True)]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)


def decided(ports: list[int]) -> tuple[int, list[dict[str, Any]]]:
    snapshots = [fetch_stats(port) for port in ports]
    return sum(s["processed"] + s["dlq_total"] for s in snapshots), snapshots


def profiler(pid: int, rules: Path) -> subprocess.Popen[bytes] | None:
    """py-spy sampling the worker (all threads, collapsed stacks) when --profile is set."""
    directory = PROFILE[0]
    if directory is None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"capacity-{rules.stem}.txt"
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--rate",
            "100",
            "--output",
            str(target),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def run_capacity(stack: LocalStack, rules: Path, backlog: int, workdir: Path) -> dict[str, Any]:
    run = Run(stack, f"cap-{rules.stem}-{int(time.time())}", rules)
    run.create()
    asyncio.run(
        offer(stack.bootstrap, run.topics["FRAUD_TOPIC_PAYMENTS"], payloads_for(backlog), None)
    )
    with workers(run, 1, workdir) as started:
        ((port, pid),) = started
        done, _ = decided([port])
        while done == 0:  # the first decision: recovery and the rules are behind us
            time.sleep(0.05)
            done, _ = decided([port])
        first_at, first_done, first_cpu = time.time(), done, cpu_seconds(pid)
        sampler = profiler(pid, rules)
        deadline = first_at + 600
        # Done when every payment is decided for its card and the forwarded ones (the
        # repartition topic's decisions, which trail) have stopped coming in.
        grouped = -1
        while time.time() < deadline:
            time.sleep(0.1)
            done, (snapshot,) = decided([port])
            if done >= backlog and snapshot["grouped_processed"] == grouped:
                break
            grouped = snapshot["grouped_processed"]
        elapsed, cpu = time.time() - first_at, cpu_seconds(pid) - first_cpu
        if sampler is not None:
            sampler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            sampler.wait(60)
    measured = done - first_done
    return {
        "rules": str(rules.relative_to(REPO)),
        "backlog": backlog,
        "decided": done,
        "per_s": round(measured / max(elapsed, 1e-9)),
        "cpu_s_per_100k": round(cpu / max(measured, 1) * 100_000, 2),
    }


def merged_latency(snapshots: list[dict[str, Any]]) -> HdrHistogram:
    merged = new_histogram()
    for snapshot in snapshots:
        merged.add(HdrHistogram.decode(snapshot["decision_latency_hdr"]))
    return merged


def difference(after: HdrHistogram, before: HdrHistogram) -> HdrHistogram:
    """What ``after`` recorded since ``before`` (both cumulative, same layout)."""
    result = new_histogram()
    for index, (now, then) in enumerate(zip(after.counts, before.counts, strict=True)):
        if now > then:
            result.record_value(after.get_value_from_index(index), now - then)
    return result


def run_latency(
    stack: LocalStack, rules: Path, rate: int, duration: float, count: int, workdir: Path
) -> dict[str, Any]:
    run = Run(stack, f"lat-{count}w-{rate}-{time.time_ns()}", rules)
    run.create()
    total = int(rate * duration)
    payloads = payloads_for(total + WARM_UP)
    topic = run.topics["FRAUD_TOPIC_PAYMENTS"]
    with workers(run, count, workdir) as started:
        ports = [port for port, _ in started]
        time.sleep(3 + 3 * count)  # let the consumer group settle
        # A new deployment's first seconds of traffic fetch slowly (its internal topics are
        # brand new: the ~100 ms stalls vanish when a worker restarts on existing ones), so
        # a short warm-up at 1 000/s is decided first and left out of the numbers.
        asyncio.run(offer(stack.bootstrap, topic, payloads[:WARM_UP], 1000))
        while decided(ports)[0] < WARM_UP:
            time.sleep(0.1)
        before = merged_latency(decided(ports)[1])
        began = asyncio.run(offer(stack.bootstrap, topic, payloads[WARM_UP:], rate))
        finished, done = began, 0
        deadline = time.time() + duration * 10 + 60
        snapshots: list[dict[str, Any]] = []
        while time.time() < deadline:
            done, snapshots = decided(ports)
            done -= WARM_UP
            finished = time.time()
            if done >= total:
                break
            time.sleep(0.2)
    latency = difference(merged_latency(snapshots), before)
    alerts = asyncio.run(
        alert_latency(stack.bootstrap, run.topics["FRAUD_TOPIC_ALERTS"], int(began * 1000))
    )
    return {
        "pipeline": f"fraud-detection, {count} worker{'s' if count > 1 else ''}",
        "offered": rate,
        "count": total,
        "processed": done,
        "achieved": round(done / max(finished - began, 1e-9)),
        "latency_ms": percentiles_ms(latency),
        "alert_latency_ms": percentiles_ms(alerts),
        # Each worker's garbage-collection pauses over its life (GcPauses in app.worker.stats).
        "gc": [snapshot.get("gc") for snapshot in snapshots],
    }


def run_bare(stack: LocalStack, rate: int, duration: float) -> dict[str, Any]:
    uid = f"bare-{rate}-{int(time.time())}"
    stack.create_topics([Topic(f"{uid}.in", PARTITIONS), Topic(f"{uid}.out", PARTITIONS)])
    count = int(rate * duration)
    payloads = payloads_for(count)
    pipe = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.bare_pipe",
            stack.bootstrap,
            f"{uid}.in",
            f"{uid}.out",
            str(count),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert pipe.stdout is not None
    pipe.stdout.readline()  # "ready"
    time.sleep(3)
    started = asyncio.run(offer(stack.bootstrap, f"{uid}.in", payloads, rate))
    result = json.loads(pipe.stdout.readline())
    pipe.wait(30)
    return {
        "pipeline": "bare aiokafka pipe",
        "offered": rate,
        "count": count,
        "processed": result["processed"],
        "achieved": round(result["processed"] / max(result["last"] - started, 1e-9)),
        "latency_ms": result["decision_latency_ms"],
    }


def capacity_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| rules | backlog | payments/s | CPU s per 100k |", "|---|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row['rules']} | {row['backlog']} | {row['per_s']} | {row['cpu_s_per_100k']} |"
        )
    return "\n".join(lines)


def latency_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| pipeline | offered/s | achieved/s | decision p50 / p99 / max ms | alert p50 / p99 ms |",
        "|---|---:|---:|---|---|",
    ]
    for row in rows:
        lat, alert = row["latency_ms"], row.get("alert_latency_ms")
        alerts = (
            "-" if not alert or not alert["count"] else f"{alert['p50']:.1f} / {alert['p99']:.1f}"
        )
        lines.append(
            f"| {row['pipeline']} | {row['offered']} | {row['achieved']}"
            f" | {lat['p50']:.1f} / {lat['p99']:.1f} / {lat['max']:.1f} | {alerts} |"
        )
    return "\n".join(lines)


def summary(rows: list[dict[str, Any]]) -> str:
    """Per offered rate: the median and the range of the repeated runs' p99s."""
    lines = [
        "| offered/s | runs | decision p99 median (min-max) ms | alert p99 median (min-max) ms |"
    ]
    lines.append("|---:|---:|---|---|")
    for rate in sorted({r["offered"] for r in rows}):
        runs = [r for r in rows if r["offered"] == rate and r["pipeline"].startswith("fraud")]
        if not runs:
            continue
        cells = []
        for key in ("latency_ms", "alert_latency_ms"):
            p99s = [r[key]["p99"] for r in runs if r.get(key, {}).get("count")]
            cells.append(
                f"{statistics.median(p99s):.1f} ({min(p99s):.1f}-{max(p99s):.1f})" if p99s else "-"
            )
        lines.append(f"| {rate} | {len(runs)} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__)
    parser.add_argument("--backlog", type=int, default=500_000, help="payments for capacity")
    parser.add_argument(
        "--capacity-rules",
        type=Path,
        nargs="*",
        default=[SEED_RULES, DEFAULT_RULES],
        help="rule files to measure capacity with (none: skip capacity)",
    )
    parser.add_argument("--rates", default="1000,5000,10000", help="offered rates (payments/s)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per latency run")
    parser.add_argument("--repeat", type=int, default=5, help="latency runs per rate")
    parser.add_argument("--workers", type=int, default=1, help="workers in a latency run")
    parser.add_argument("--latency-rules", type=Path, default=SEED_RULES)
    parser.add_argument("--no-bare", action="store_true", help="skip the bare aiokafka pipe")
    parser.add_argument("--output", type=Path, default=RESULTS / "pipeline.json")
    parser.add_argument("--archive", action="store_true", help="workers run the archive too")
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy each capacity worker into DIR (collapsed stacks; slows the run)",
    )
    args = parser.parse_args(argv)
    ARCHIVE[0] = args.archive
    PROFILE[0] = args.profile
    # SIGTERM (e.g. a CI timeout) must run the finally blocks that stop the workers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        rates = [int(r) for r in args.rates.split(",") if r]
    except ValueError:
        parser.error("--rates must be comma-separated integers")
    # Kept afterwards: the worker logs are the first thing to read when a number looks wrong.
    tmp = Path(tempfile.mkdtemp(prefix="fraud-bench-"))
    print(f"worker logs in {tmp}", flush=True)
    capacity: list[dict[str, Any]] = []
    latency: list[dict[str, Any]] = []
    with LocalStack(kafka=True, dynamodb=False, partitions=PARTITIONS) as stack:
        for rules in args.capacity_rules:
            capacity.append(run_capacity(stack, rules.resolve(), args.backlog, tmp))
            print(capacity_table(capacity[-1:]).splitlines()[-1], flush=True)
        for rate in rates:
            for _ in range(args.repeat):
                latency.append(
                    run_latency(
                        stack, args.latency_rules.resolve(), rate, args.duration, args.workers, tmp
                    )
                )
                print(latency_table(latency[-1:]).splitlines()[-1], flush=True)
            if not args.no_bare:
                latency.append(run_bare(stack, rate, args.duration))
                print(latency_table(latency[-1:]).splitlines()[-1], flush=True)
    report = {
        "cores": os.cpu_count(),
        "partitions": PARTITIONS,
        "archive": args.archive,
        "capacity": capacity,
        "latency_rules": str(args.latency_rules.resolve().relative_to(REPO)),
        "duration_s": args.duration,
        "repeat": args.repeat,
        "latency": latency,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    print(f"\n{os.cpu_count()} cores, {PARTITIONS} partitions, broker on the same machine\n")
    if capacity:
        print(capacity_table(capacity) + "\n")
    print(latency_table(latency) + "\n")
    print(summary(latency))


if __name__ == "__main__":
    main()

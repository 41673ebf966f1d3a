"""Offered vs achieved rate and decision latency, Faust worker vs a bare aiokafka pipe.

``python -m bench.pipeline [--rates 1000,5000,10000] [--duration 15]`` starts real Kafka,
then for each rate runs (1) a fresh fraud-detection worker and (2) the bare pipe,
feeding each the same payments at the offered rate. Prints a table and writes
``bench/results/pipeline.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from hdrh.histogram import HdrHistogram

from app.generator import PaymentGenerator
from app.rules_admin.topic import load_rule_file, publish
from app.worker.stats import new_histogram, percentiles_ms
from infra.local.stack import LocalStack, Topic

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
PARTITIONS = 4


async def offer(
    bootstrap: str, topic: str, payloads: list[tuple[bytes, bytes]], rate: float
) -> float:
    """Send at ``rate``/s in 5 ms slices; returns the wall-clock start."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=1, acks=1, max_batch_size=512 * 1024
    )
    await producer.start()
    started = time.time()
    try:
        sent = 0
        while sent < len(payloads):
            due = min(len(payloads), int((time.time() - started + 0.005) * rate))
            for key, value in payloads[sent:due]:
                await producer.send(topic, value, key=key)
            sent = max(sent, due)
            await asyncio.sleep(0.005)
        await producer.flush()
    finally:
        await producer.stop()
    return started


def payloads_for(count: int) -> list[tuple[bytes, bytes]]:
    generator = PaymentGenerator(seed=3, cards=20_000, fraud_ratio=0.005)
    now = int(time.time() * 1000)
    return [(p.card_id.encode(), p.to_json()) for p, _ in generator.stream(count, now, 1)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fetch_stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats/", timeout=5) as response:
        body: dict[str, Any] = json.load(response)
        return body


def run_workers(
    stack: LocalStack, rate: int, duration: float, workdir: Path, workers: int, rules_file: Path
) -> dict[str, Any]:
    uid = f"bench-{workers}w-{rate}-{int(time.time())}"
    topics = {
        "FRAUD_TOPIC_PAYMENTS": f"{uid}.payments",
        "FRAUD_TOPIC_ALERTS": f"{uid}.alerts",
        "FRAUD_TOPIC_DLQ": f"{uid}.dlq",
        "FRAUD_TOPIC_RULES": f"{uid}.rules",
    }
    stack.create_topics([Topic(name, PARTITIONS) for name in topics.values()])
    rules = load_rule_file(rules_file)
    records: list[tuple[str, bytes | None]] = [(r.rule_id, r.to_bytes()) for r in rules]
    asyncio.run(publish(stack.bootstrap, topics["FRAUD_TOPIC_RULES"], records))
    ports = [free_port() for _ in range(workers)]
    processes = []
    for index, port in enumerate(ports):
        env = {
            **os.environ,
            **stack.env(),
            **topics,
            "FRAUD_APP_ID": uid,
            "FRAUD_PARTITIONS": str(PARTITIONS),
            "FRAUD_WEB_PORT": str(port),
            "FRAUD_DATADIR": str(workdir / f"{uid}-{index}"),
            # Decision latency is measured here; the sink (alert latency) needs DynamoDB.
            "FRAUD_SINK_ENABLED": "false",
        }
        log = (workdir / f"{uid}-{index}.log").open("wb")
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
        time.sleep(3 + 3 * workers)  # let the consumer group settle
        count = int(rate * duration)
        payloads = payloads_for(count)
        started = asyncio.run(
            offer(stack.bootstrap, topics["FRAUD_TOPIC_PAYMENTS"], payloads, rate)
        )
        finished, done = started, 0
        deadline = time.time() + duration * 10 + 60
        while time.time() < deadline:
            snapshots = [fetch_stats(port) for port in ports]
            done = sum(s["processed"] + s["dlq_total"] for s in snapshots)
            finished = time.time()
            if done >= count:
                break
            time.sleep(0.2)
        latency = new_histogram()
        for snapshot in snapshots:
            latency.add(HdrHistogram.decode(snapshot["decision_latency_hdr"]))
        return {
            "pipeline": f"fraud-detection, {workers} worker{'s' if workers > 1 else ''}",
            "offered": rate,
            "count": count,
            "processed": done,
            "achieved": round(done / max(finished - started, 1e-9)),
            "latency_ms": percentiles_ms(latency),
        }
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)


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


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| pipeline | offered/s | achieved/s | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lat = row["latency_ms"]
        lines.append(
            f"| {row['pipeline']} | {row['offered']} | {row['achieved']} | {lat['p50']:.1f}"
            f" | {lat['p90']:.1f} | {lat['p99']:.1f} | {lat['max']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__)
    parser.add_argument(
        "--rates", default="1000,5000,10000", help="comma-separated offered rates (payments/s)"
    )
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per rate")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts to measure")
    parser.add_argument(
        "--rules",
        type=Path,
        default=REPO / "app" / "rules_admin" / "default_rules.yaml",
        help="rules to publish (default: the shipped ones, one of which needs the repartition)",
    )
    parser.add_argument("--no-bare", action="store_true", help="skip the bare aiokafka pipe")
    parser.add_argument("--output", type=Path, default=RESULTS / "pipeline.json")
    args = parser.parse_args(argv)
    # SIGTERM (e.g. a CI timeout) must run the finally blocks that stop the workers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        rates = [int(r) for r in args.rates.split(",")]
        worker_counts = [int(w) for w in args.workers.split(",")]
    except ValueError:
        parser.error("--rates and --workers must be comma-separated integers")
    rows: list[dict[str, Any]] = []
    # Kept afterwards: the worker logs are the first thing to read when a number looks wrong.
    tmp = tempfile.mkdtemp(prefix="fraud-bench-")
    print(f"worker logs in {tmp}", flush=True)
    with (
        LocalStack(kafka=True, dynamodb=False, partitions=PARTITIONS) as stack,
    ):
        for rate in rates:
            for workers in worker_counts:
                rows.append(run_workers(stack, rate, args.duration, Path(tmp), workers, args.rules))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
            if not args.no_bare:
                rows.append(run_bare(stack, rate, args.duration))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "cores": os.cpu_count(),
        "rules": str(
            args.rules.relative_to(REPO) if args.rules.is_relative_to(REPO) else args.rules
        ),
        "duration_s": args.duration,
        "partitions": PARTITIONS,
        "rows": rows,
    }
    args.output.write_text(json.dumps(report, indent=2))
    print(f"\n{os.cpu_count()} cores, {args.duration:g} s per rate, {PARTITIONS} partitions\n")
    print(table(rows))


if __name__ == "__main__":
    main()

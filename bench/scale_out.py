"""Scale-out: the same backlog drained by one worker, then by two in one consumer group.

``python -m bench.scale_out`` starts real Kafka and, per rule file in ``--rules`` (default: the
seed rule alone, then the shipped default rules) and per worker count in ``--workers``
(default ``1,2``), produces a backlog of ``--backlog`` payments (default 500 000, the same as
``bench.pipeline``'s capacity) on fresh topics of ``--partitions`` partitions (default 4, as in
``bench.pipeline``: two workers hold two each), then starts that many fresh workers with one
app id (one consumer group) and measures, from the first decision of any worker to the last:

* the time to drain the backlog and payments decided per second over it (the group's
  formation, a rebalance when the second worker joins, included);
* payments per second while every worker was deciding (the rebalance left out);
* per worker: its share, the partitions it held, its CPU seconds per 100 000 payments (the
  figure sizing derives from: ``docs/operations/scaling.md#sizing``);
* the cores the broker, the workers and everything else on the machine kept busy;
* the bytes the run wrote to Kafka per payment, by topic kind (payments, changelogs,
  repartition, alerts, dead letters), read from the broker's log directory.

Then, unless ``--rates`` is empty, the latency of two workers at each offered rate (one run of
``bench.pipeline``'s latency measurement, ``--duration`` seconds).

On a machine with few cores the broker and every worker share them: two workers cannot
decide twice as much there, and the output says how busy the machine was. What the run shows
wherever it runs: the partitions spread over the group, every payment is decided (a few twice:
the join's rebalance replays what the first worker had not committed), and what a payment
costs a worker in CPU when the work is shared. Results go to
``bench/results/scale_out.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import pipeline
from bench.pipeline import (
    CLOCK_TICKS,
    DEFAULT_RULES,
    PARTITIONS,
    REPO,
    RESULTS,
    SEED_RULES,
    Run,
    backlog_drain,
    cpu_seconds,
    latency_table,
    run_latency,
    workers,
)
from infra.local.stack import LocalStack, group_members

CAVEAT = (
    "The broker, the workers and the bench share this machine's {cores} cores: two workers "
    "cannot decide twice as much here. Read the CPU seconds per 100 000 payments per worker "
    "(the sizing input) and the cores busy; re-run on a quiet machine before quoting numbers."
)


def machine_cpu_seconds() -> float:
    """CPU seconds every core of the machine spent busy so far (/proc/stat: all but idle and
    iowait)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / CLOCK_TICKS


def group_cpu_seconds(pgid: int) -> Callable[[], float]:
    """CPU seconds of the live processes in a process group (the broker's JVM and its parent)."""

    def read() -> float:
        total = 0.0
        for pid in group_members([pgid]):
            try:
                total += cpu_seconds(pid)
            except (FileNotFoundError, ProcessLookupError):
                continue
        return total

    return read


def topic_kind(topic: str, uid: str) -> str:
    """Which part of the pipeline a topic of run ``uid`` is: its record bytes are grouped so."""
    if topic.endswith("-changelog"):
        return "changelogs"
    if topic.endswith("-payments-by-group"):
        return "repartition"
    suffix = topic[len(uid) + 1 :] if topic.startswith(f"{uid}.") else ""
    return suffix if suffix in {"payments", "alerts", "dlq"} else "other"


def kafka_bytes(stack: LocalStack, uid: str) -> dict[str, int] | None:
    """Bytes in the broker's log segments of the run's topics, by kind (None when the broker
    is not this stack's own: its log directory is elsewhere)."""
    data = stack.run_dir / "kafka-data"
    if stack.kafka_backend != "kafka" or not data.is_dir():
        return None
    found: dict[str, int] = {}
    for directory in data.iterdir():
        topic, _, partition = directory.name.rpartition("-")
        if not partition.isdigit() or not topic.startswith(uid):
            continue
        size = sum(log.stat().st_size for log in directory.glob("*.log"))
        kind = topic_kind(topic, uid)
        found[kind] = found.get(kind, 0) + size
    return found


def ready(port: int) -> bool:
    try:
        url = f"http://127.0.0.1:{port}/readyz"
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:  # HTTPError (503: not ready) included
        return False


def restore(run: Run, workdir: Path, changelog_bytes: int | None) -> dict[str, Any]:
    """A fresh worker (empty state directory) on a drained run's changelogs: seconds from its
    web server answering to /readyz (tables recovered, rules read), and the changelog bytes
    it read to get there (every write of the drain: its segments are too young to compact)."""
    with workers(run, 1, workdir, name="restore") as ((port, _),):
        began = time.time()
        while not ready(port):
            if time.time() - began > 600:
                raise RuntimeError(f"the restoring worker was not ready in 600 s; see {workdir}")
            time.sleep(0.1)
        seconds = time.time() - began
    megabytes = None if changelog_bytes is None else changelog_bytes / 1e6
    return {
        "seconds": round(seconds, 2),
        "changelog_mb": None if megabytes is None else round(megabytes, 1),
        "changelog_mb_per_partition": None
        if megabytes is None
        else round(megabytes / run.partitions, 1),
        "mb_per_s": None if megabytes is None else round(megabytes / max(seconds, 1e-9), 1),
    }


def measure(
    stack: LocalStack, rules: Path, count: int, backlog: int, partitions: int, workdir: Path
) -> dict[str, Any]:
    uid = f"scale-{count}w-{rules.stem}-{time.time_ns()}"
    run = Run(stack, uid, rules, partitions)
    probes = {"machine": machine_cpu_seconds}
    kafka = stack.process_groups().get("kafka")
    if kafka is not None:
        probes["broker"] = group_cpu_seconds(kafka)
    found = backlog_drain(run, backlog, workdir, count, probes)
    cores = found["cores_busy"]
    if "broker" in cores:
        cores["everything_else"] = round(cores["machine"] - cores["workers"] - cores["broker"], 2)
    written = kafka_bytes(stack, uid)
    for worker in found["per_worker"]:
        actives = (worker.pop("assignment") or {}).get("actives", {})
        worker["partitions"] = actives.get(run.topics["FRAUD_TOPIC_PAYMENTS"], [])
    if count == 1:  # the state one worker built: how long a fresh worker takes to restore it
        found["restore"] = restore(run, workdir, (written or {}).get("changelogs"))
    return {
        "rules": str(rules.relative_to(REPO)),
        "workers": count,
        "partitions": partitions,
        "backlog": backlog,
        **found,
        "kafka_bytes_per_payment": None
        if written is None
        else {kind: round(size / backlog, 1) for kind, size in sorted(written.items())},
    }


def capacity_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| rules | workers | partitions each | decided | drain s | payments/s"
        " | payments/s, all deciding"
        " | CPU s per 100k: all (each worker) | cores busy: workers / broker / else"
        " | dead-lettered |",
        "|---|---:|---|---:|---:|---:|---:|---|---|---:|",
    ]
    for row in rows:
        each = [w["partitions"] for w in row["per_worker"]]
        both = row["all_deciding"]
        cores = row["cores_busy"]
        lines.append(
            f"| {Path(row['rules']).name} | {row['workers']} | {each}"
            f" | {row['decided']} | {row['seconds']} | {row['per_s']}"
            f" | {both['per_s'] if both else '-'}"
            f" | {row['cpu_s_per_100k']}"
            f" ({' / '.join(str(w['cpu_s_per_100k']) for w in row['per_worker'])})"
            f" | {cores.get('workers')} / {cores.get('broker', '-')}"
            f" / {cores.get('everything_else', '-')}"
            f" | {sum(sum(w['dlq'].values()) for w in row['per_worker'])} |"
        )
    return "\n".join(lines)


def bytes_table(rows: list[dict[str, Any]]) -> str:
    kinds = sorted({k for row in rows for k in (row["kafka_bytes_per_payment"] or {})})
    lines = ["| rules | workers | " + " | ".join(kinds) + " | total |"]
    lines.append("|---|---:|" + "---:|" * (len(kinds) + 1))
    for row in rows:
        per = row["kafka_bytes_per_payment"] or {}
        cells = [str(per.get(kind, "-")) for kind in kinds]
        total = round(sum(per.values()), 1)
        lines.append(
            f"| {Path(row['rules']).name} | {row['workers']} | {' | '.join(cells)} | {total} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_out", description=__doc__)
    parser.add_argument("--backlog", type=int, default=500_000, help="payments per drain")
    parser.add_argument("--partitions", type=int, default=PARTITIONS)
    parser.add_argument("--workers", default="1,2", help="worker counts to drain with")
    parser.add_argument("--rules", type=Path, nargs="*", default=[SEED_RULES, DEFAULT_RULES])
    parser.add_argument("--rates", default="10000", help="offered rates for two workers")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per latency run")
    parser.add_argument("--output", type=Path, default=RESULTS / "scale_out.json")
    parser.add_argument(
        "--no-archive", action="store_true", help="workers run without the archive (on as shipped)"
    )
    args = parser.parse_args(argv)
    try:
        counts = [int(c) for c in args.workers.split(",") if c]
        rates = [int(r) for r in args.rates.split(",") if r]
    except ValueError:
        parser.error("--workers and --rates must be comma-separated integers")
    if not counts or min(counts) < 1 or max(counts) > args.partitions:
        parser.error("every worker count must be between 1 and --partitions")
    pipeline.ARCHIVE[0] = not args.no_archive
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="fraud-scale-"))
    print(f"worker logs in {tmp}", flush=True)
    cores = os.cpu_count()
    capacity: list[dict[str, Any]] = []
    latency: list[dict[str, Any]] = []
    with LocalStack(kafka=True, dynamodb=False, partitions=args.partitions) as stack:
        for rules in args.rules:
            for count in counts:
                row = measure(stack, rules.resolve(), count, args.backlog, args.partitions, tmp)
                capacity.append(row)
                print(capacity_table([row]).splitlines()[-1], flush=True)
        for rate in rates:
            latency.append(run_latency(stack, SEED_RULES, rate, args.duration, 2, tmp))
            print(latency_table(latency[-1:]).splitlines()[-1], flush=True)
    report = {
        "cores": cores,
        "load_average_at_end": os.getloadavg(),
        "caveat": CAVEAT.format(cores=cores),
        "partitions": args.partitions,
        "archive": not args.no_archive,
        "capacity": capacity,
        "latency_rules": str(SEED_RULES.relative_to(REPO)),
        "duration_s": args.duration,
        "latency": latency,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    print(f"\n{cores} cores, {args.partitions} partitions, broker on the same machine\n")
    print(capacity_table(capacity) + "\n")
    print("Bytes written to Kafka per payment (record batches on the broker's disk):\n")
    print(bytes_table(capacity) + "\n")
    for row in capacity:
        if "restore" in row:
            found = row["restore"]
            print(
                f"Restore, {Path(row['rules']).name}: a fresh worker read {found['changelog_mb']}"
                f" MB of changelogs ({found['changelog_mb_per_partition']} MB a partition) and"
                f" was ready in {found['seconds']} s after its web server answered."
            )
    if latency:
        print("\n" + latency_table(latency) + "\n")
    print(CAVEAT.format(cores=cores))


if __name__ == "__main__":
    main()

"""Capacity on a backlog and latency at offered rates, Faust worker vs a bare aiokafka pipe.

``python -m bench.pipeline`` starts real Kafka (4 partitions) and measures:

* **capacity**: ``--backlog`` payments (default 500 000) produced before a fresh worker
  starts; payments decided per second from its first decision to its last, and the
  worker's CPU seconds per 100 000 payments (its archive process's, ``agents.archive_child``,
  included: a worker's CPU here is its process tree's), once per rule file in ``--capacity-rules``
  (default: the seed rule alone, then the shipped default rules);
* **latency**: the generator offering ``--rates`` for ``--duration`` seconds each to a fresh
  worker, ``--repeat`` times per rate (Faust's fetch timing once made runs bimodal, so one
  run proves little): decision latency (the payment's produce timestamp to its state being
  written, in the worker's HdrHistogram) and alert latency (the payment's produce timestamp
  to the alert's append on ``fraud.alerts``, whose topic stamps LogAppendTime); then the
  bare pipe (consume, decode, produce) once per rate on the same broker;
* **low-rate CPU** (``--low-rate``): a fresh worker, warmed up, then left idle for
  ``--low-rate-duration`` seconds and offered ``--low-rate`` payments/s for as long: its CPU
  seconds per minute idle and per 100 000 payments at that rate, with the archive on (as
  shipped) and off (``--low-rate-archive``, default ``both``), ``--low-rate-repeat`` runs
  each (``--low-rate 0``: none). Nothing
  polls the worker meanwhile (``/stats`` is read before and after), and the CPU of each of
  its threads (and its archive process's, ``child-<pid>/…``) is kept too
  (``/proc/<pid>/task``): at a low rate most of a worker's CPU is
  not payments.

Tables are printed; the raw numbers go to ``bench/results/pipeline.json`` and, for the
low-rate runs, ``bench/results/low_rate.json``.
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and of all its descendants so far, live or ended: a
    worker's own and its archive process's (``agents.archive_child``), a restarted one's
    included (an ended child's CPU is in its parent's cutime and cstime once it is reaped).
    Reads every /proc/<pid>/stat, ~1.5 ms."""
    total = 0.0
    for member in descendants(pid, with_self=True):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile: counted in its parent's cutime once reaped
            continue
        total += sum(int(f) for f in fields[11:15]) / CLOCK_TICKS  # utime stime cutime cstime
    return total


def descendants(pid: int, *, with_self: bool = False) -> list[int]:
    """The pids of a process's live descendants (its archive process), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found if with_self else found[1:]


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """User + system CPU of each thread of a process so far, by thread: ``main`` (the event
    loop), or the thread's name with its id (Python threads share the process's name, so
    those are ``<name>-<tid>``; RocksDB names its own). The threads of its live descendants
    (a worker's archive process) are ``child-<pid>/<label>``."""
    found = _threads_of(pid, "")
    for child in descendants(pid):
        found.update(_threads_of(child, f"child-{child}/"))
    return found


def _threads_of(pid: int, prefix: str) -> dict[str, float]:
    found: dict[str, float] = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:  # the process ended meanwhile
        return found
    for task in tasks:
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        name = stat.split("(", 1)[1].rsplit(")", 1)[0]
        fields = stat.rsplit(")", 1)[1].split()
        label = "main" if task.name == str(pid) else f"{name}-{task.name}"
        found[prefix + label] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return found


def thread_delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """CPU seconds per thread between two ``thread_cpu_seconds``, busiest first."""
    spent = {name: cpu - before.get(name, 0.0) for name, cpu in after.items()}
    return {name: round(cpu, 2) for name, cpu in sorted(spent.items(), key=lambda i: -i[1])}


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
    partitions: int = PARTITIONS

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
            [
                Topic(name, self.partitions)
                for key, name in topics.items()
                if key != "FRAUD_TOPIC_ALERTS"
            ]
            + [
                Topic(
                    topics["FRAUD_TOPIC_ALERTS"],
                    self.partitions,
                    {"message.timestamp.type": "LogAppendTime"},
                )
            ]
        )
        records: list[tuple[str, bytes | None]] = [
            (r.rule_id, r.to_bytes()) for r in load_rule_file(self.rules)
        ]
        asyncio.run(publish(self.stack.bootstrap, topics["FRAUD_TOPIC_RULES"], records))


# The workers run the Parquet archive, as shipped, unless --no-archive (set once by main).
ARCHIVE = [True]
# --profile DIR: py-spy samples each capacity worker into DIR (set once by main).
PROFILE: list[Path | None] = [None]


@contextmanager
def workers(
    run: Run,
    count: int,
    workdir: Path,
    name: str = "w",
    archive: bool | None = None,
) -> Iterator[list[tuple[int, int]]]:
    """``count`` fresh workers on the run's topics, each with a state directory of its own
    (``name`` tells them from earlier ones of the run); yields (web port, pid) per worker.
    ``archive``: whether they run the archive (None: as ``--no-archive`` says)."""
    archive = ARCHIVE[0] if archive is None else archive
    ports = [free_port() for _ in range(count)]
    processes = []
    for index, port in enumerate(ports):
        env = {
            **os.environ,
            **run.stack.env(),
            **run.topics,
            "FRAUD_APP_ID": run.uid,
            "FRAUD_PARTITIONS": str(run.partitions),
            "FRAUD_WEB_PORT": str(port),
            "FRAUD_DATADIR": str(workdir / f"{run.uid}-{name}{index}"),
            # Alerts are measured on their topic; the DynamoDB sink is not part of this.
            "FRAUD_SINK_ENABLED": "false",
            # On as shipped. Its rolls (64 MiB or 300 s per partition) mostly fall after a
            # capacity run's drain: bench.archive_cost measures the whole of its cost.
            "FRAUD_ARCHIVE_ENABLED": "true" if archive else "false",
            "FRAUD_ARCHIVE_URL": str(workdir / f"{run.uid}-archive"),
        }
        log = (workdir / f"{run.uid}-{name}{index}.log").open("wb")
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


def profiler(pid: int, name: str) -> subprocess.Popen[bytes] | None:
    """py-spy sampling the worker and its archive process (all threads, collapsed stacks)
    into ``name``.txt when --profile is set."""
    directory = PROFILE[0]
    if directory is None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{name}.txt"
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
            "--threads",
            "--subprocesses",
            "--output",
            str(target),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_profiler(sampler: subprocess.Popen[bytes] | None) -> None:
    if sampler is not None:
        sampler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        sampler.wait(60)


@dataclass
class Share:
    """One worker's part of a drain. Counted twice: from the drain's first decision (by any
    worker: what the group spent, a late joiner's start-up included) and from its own first
    decision (what deciding costs it, as a single worker's capacity is counted); both up to
    its last decision, forwarded payments' included."""

    port: int
    pid: int
    total: int = 0  # payments it has decided, all told (processed or dead-lettered)
    activity: int = 0  # the same and the forwarded payments it decided
    at_begin: tuple[int, float] = (0, 0.0)  # (decided, CPU s) at the drain's first decision
    at_first: tuple[int, float] | None = None  # the same at its own first decision
    cpu_last: float = 0.0  # its CPU seconds at its last decision
    first_at: float | None = None
    last_at: float | None = None
    snapshot: dict[str, Any] = field(default_factory=dict)

    def poll(self, now: float | None = None) -> int:
        """Its decisions so far; with ``now``, the drain has begun and changes are timed."""
        self.snapshot = fetch_stats(self.port)
        self.total = self.snapshot["processed"] + self.snapshot["dlq_total"]
        activity: int = self.total + self.snapshot["grouped_processed"]
        if now is not None and activity > self.activity:
            self.cpu_last = tree_cpu_seconds(self.pid)
            if self.at_first is None:
                self.first_at, self.at_first = now, (self.total, self.cpu_last)
            self.last_at = now
        self.activity = activity
        return activity

    def begin(self, now: float) -> None:
        self.cpu_last = tree_cpu_seconds(self.pid)
        self.at_begin = (self.total, self.cpu_last)
        if self.activity:
            self.first_at = self.last_at = now
            self.at_first = self.at_begin

    @property
    def decided(self) -> int:
        """Since the drain's first decision."""
        return self.total - self.at_begin[0]

    @property
    def cpu_s(self) -> float:
        """From the drain's first decision to its own last."""
        return self.cpu_last - self.at_begin[1]

    @property
    def lag(self) -> int:
        """Records its consumer has not committed yet, on every partition it holds."""
        return int(self.snapshot.get("consumer", {}).get("total_lag") or 0)

    def report(self, began: float) -> dict[str, Any]:
        first, last = self.first_at, self.last_at
        own_decided, own_cpu = 0, 0.0
        if self.at_first is not None:
            own_decided, own_cpu = self.total - self.at_first[0], self.cpu_last - self.at_first[1]
        active = (last - first) if first is not None and last is not None else 0.0
        return {
            "decided": self.decided,
            "cpu_s": round(self.cpu_s, 2),
            "first_decision_s": None if first is None else round(first - began, 2),
            "last_decision_s": None if last is None else round(last - began, 2),
            # From its own first decision to its last.
            "per_s": round(own_decided / active) if active > 0 else None,
            "cpu_s_per_100k": round(own_cpu / max(own_decided, 1) * 100_000, 2),
            "dlq": self.snapshot.get("dlq", {}),
            "assignment": self.snapshot.get("assignment"),
        }


def all_deciding(
    shares: list[Share], timeline: list[tuple[float, list[int]]], began: float
) -> dict[str, Any] | None:
    """Payments per second while every worker was deciding: from the last worker's first
    decision to the first worker's last (none with one worker or a window under 1 s)."""
    firsts = [s.first_at for s in shares]
    lasts = [s.last_at for s in shares]
    if len(shares) < 2 or None in firsts or None in lasts:
        return None
    start = max(f for f in firsts if f is not None) - began
    stop = min(last for last in lasts if last is not None) - began
    inside = [(t, sum(done)) for t, done in timeline if start <= t <= stop]
    if len(inside) < 2 or inside[-1][0] - inside[0][0] < 1.0:
        return None
    (t0, d0), (t1, d1) = inside[0], inside[-1]
    return {"from_s": round(t0, 2), "to_s": round(t1, 2), "per_s": round((d1 - d0) / (t1 - t0))}


def watch(shares: list[Share], backlog: int, began: float) -> list[tuple[float, list[int]]]:
    """Poll the workers until the drain is over; returns, at every poll, the seconds since
    the drain began and what each worker has decided since.

    Over when every payment has been decided for its card, the forwarded ones (the
    repartition topic's decisions, which trail) have stopped coming in, and every worker has
    committed all it holds (a rebalance makes the group decide some payments twice, so a
    count alone can be reached early), or 5 s after the rest if commits lag behind.
    """
    timeline: list[tuple[float, list[int]]] = [(0.0, [0] * len(shares))]
    activity, counted_at = -1, None
    while time.time() < began + 600:
        time.sleep(0.1)
        now = time.time()
        current = sum(share.poll(now) for share in shares)
        timeline.append((now - began, [share.decided for share in shares]))
        counted = sum(share.total for share in shares) >= backlog and current == activity
        if counted and counted_at is None:
            counted_at = now
        elif not counted:
            counted_at = None
        if counted_at is not None and (
            all(share.lag == 0 for share in shares) or now - counted_at > 5
        ):
            break
        activity = current
    return timeline


def drain(
    started: list[tuple[int, int]],
    backlog: int,
    probes: dict[str, Callable[[], float]] | None = None,
    profile_as: Path | None = None,
) -> dict[str, Any]:
    """Wait for the ``started`` workers (web port, pid) to decide a backlog of ``backlog``
    payments, measured from the first decision of any of them to the last of all
    (:func:`watch`). ``probes`` are cumulative CPU seconds of other processes (the broker,
    the machine), reported as cores busy over the drain; ``profile_as`` names the py-spy
    profile of a single worker (``--profile``).
    """
    shares = [Share(port, pid) for port, pid in started]
    while sum(share.poll() for share in shares) == 0:  # recovery and the rules are behind us
        time.sleep(0.05)
    began = time.time()
    for share in shares:
        share.begin(began)
    readers = probes or {}
    before = {name: read() for name, read in readers.items()}
    sampler = None
    if profile_as is not None and len(shares) == 1:
        sampler = profiler(shares[0].pid, f"capacity-{profile_as.stem}")
    timeline = watch(shares, backlog, began)
    # Cores busy over the drain and its final commits (probes cannot be read back in time).
    window = time.time() - began
    cores = {name: round((read() - before[name]) / window, 2) for name, read in readers.items()}
    spent = sum(tree_cpu_seconds(share.pid) - share.at_begin[1] for share in shares)
    cores["workers"] = round(spent / window, 2)
    stop_profiler(sampler)
    elapsed = max(share.last_at or began for share in shares) - began
    measured = sum(share.decided for share in shares)
    return {
        "decided": sum(share.total for share in shares),
        "seconds": round(elapsed, 2),
        "per_s": round(measured / max(elapsed, 1e-9)),
        "cpu_s_per_100k": round(
            sum(share.cpu_s for share in shares) / max(measured, 1) * 100_000, 2
        ),
        "all_deciding": all_deciding(shares, timeline, began),
        "cores_busy": cores,
        "per_worker": [share.report(began) for share in shares],
        # One sample a second: (seconds, payments each worker has decided).
        "timeline": [(round(t, 1), done) for i, (t, done) in enumerate(timeline) if i % 10 == 0],
    }


def backlog_drain(
    run: Run,
    backlog: int,
    workdir: Path,
    count: int = 1,
    probes: dict[str, Callable[[], float]] | None = None,
    profile: bool = False,
) -> dict[str, Any]:
    """The run's topics holding a backlog of ``backlog`` generated payments, produced before
    ``count`` fresh workers start on it and drain it (:func:`drain`)."""
    run.create()
    payloads = payloads_for(backlog)
    asyncio.run(offer(run.stack.bootstrap, run.topics["FRAUD_TOPIC_PAYMENTS"], payloads, None))
    with workers(run, count, workdir) as started:
        return drain(started, backlog, probes, run.rules if profile else None)


def run_capacity(stack: LocalStack, rules: Path, backlog: int, workdir: Path) -> dict[str, Any]:
    run = Run(stack, f"cap-{rules.stem}-{int(time.time())}", rules)
    found = backlog_drain(run, backlog, workdir, profile=True)
    return {
        "rules": str(rules.relative_to(REPO)),
        "backlog": backlog,
        "decided": found["decided"],
        "per_s": found["per_s"],
        "cpu_s_per_100k": found["cpu_s_per_100k"],
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


def run_low_rate(
    stack: LocalStack, rules: Path, rate: int, duration: float, archive: bool, workdir: Path
) -> dict[str, Any]:
    """One fresh worker's CPU idle and at ``rate``/s, each for ``duration`` seconds."""
    run = Run(stack, f"low-{rate}-{'arc' if archive else 'noarc'}-{time.time_ns()}", rules)
    run.create()
    total = int(rate * duration)
    payloads = payloads_for(total + WARM_UP)
    topic = run.topics["FRAUD_TOPIC_PAYMENTS"]
    label = f"low-rate-{'archive' if archive else 'no-archive'}"
    # The machine is shared: its load average says how far to trust the run.
    load_before = os.getloadavg()[0]
    with workers(run, 1, workdir, archive=archive) as started:
        ((port, pid),) = started
        time.sleep(6)  # let the consumer group settle
        asyncio.run(offer(stack.bootstrap, topic, payloads[:WARM_UP], 1000))
        while decided([port])[0] < WARM_UP:
            time.sleep(0.2)
        time.sleep(5)  # the archive's roll, the changelog sends: what follows the warm-up
        # Idle: no payment, nothing polling the worker.
        sampler = profiler(pid, f"{label}-idle")
        cpu, threads = tree_cpu_seconds(pid), thread_cpu_seconds(pid)
        time.sleep(duration)
        idle_cpu, idle_threads = (
            tree_cpu_seconds(pid) - cpu,
            thread_delta(thread_cpu_seconds(pid), threads),
        )
        stop_profiler(sampler)
        # At the rate: from the first payment offered to the last decided.
        before = merged_latency(decided([port])[1])
        sampler = profiler(pid, f"{label}-{rate}")
        cpu, threads = tree_cpu_seconds(pid), thread_cpu_seconds(pid)
        began = asyncio.run(offer(stack.bootstrap, topic, payloads[WARM_UP:], rate))
        done, snapshots = decided([port])
        while done < total + WARM_UP and time.time() < began + duration * 10 + 60:
            time.sleep(0.05)
            done, snapshots = decided([port])
        busy_cpu, busy_threads = (
            tree_cpu_seconds(pid) - cpu,
            thread_delta(thread_cpu_seconds(pid), threads),
        )
        elapsed = time.time() - began
        stop_profiler(sampler)
    latency = difference(merged_latency(snapshots), before)
    measured = done - WARM_UP
    return {
        "rules": str(rules.relative_to(REPO)),
        "archive": archive,
        "duration_s": duration,
        "idle_cpu_s": round(idle_cpu, 2),
        "idle_cpu_s_per_min": round(idle_cpu / duration * 60, 2),
        "idle_threads_cpu_s": idle_threads,
        "offered": rate,
        "processed": measured,
        "seconds": round(elapsed, 1),
        "cpu_s": round(busy_cpu, 2),
        "cpu_s_per_100k": round(busy_cpu / max(measured, 1) * 100_000, 2),
        "threads_cpu_s": busy_threads,
        "latency_ms": percentiles_ms(latency),
        "load_avg_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],
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


def low_rate_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| archive | idle CPU s per min | idle CPU % of a core | offered/s | CPU s per 100k"
        " | CPU % of a core | decision p50 / p99 ms | load avg |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        lat = row["latency_ms"]
        lines.append(
            f"| {'on' if row['archive'] else 'off'} | {row['idle_cpu_s_per_min']}"
            f" | {row['idle_cpu_s'] / row['duration_s'] * 100:.1f} | {row['offered']}"
            f" | {row['cpu_s_per_100k']} | {row['cpu_s'] / max(row['seconds'], 1e-9) * 100:.1f}"
            f" | {lat['p50']:.1f} / {lat['p99']:.1f}"
            f" | {'-'.join(str(x) for x in row.get('load_avg_1min', [])) or '-'} |"
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
    parser.add_argument(
        "--no-archive", action="store_true", help="workers run without the archive (on as shipped)"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy each capacity and low-rate worker into DIR (collapsed stacks; slows the run)",
    )
    parser.add_argument(
        "--low-rate", type=int, default=1000, help="rate of the low-rate CPU runs (0: none)"
    )
    parser.add_argument(
        "--low-rate-duration", type=float, default=60.0, help="seconds idle, then at the rate"
    )
    parser.add_argument("--low-rate-repeat", type=int, default=2, help="low-rate runs each")
    parser.add_argument(
        "--low-rate-archive",
        choices=["on", "off", "both"],
        default="both",
        help="the archive in the low-rate runs (on is the shipped default)",
    )
    parser.add_argument("--low-rate-output", type=Path, default=RESULTS / "low_rate.json")
    args = parser.parse_args(argv)
    ARCHIVE[0] = not args.no_archive
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
    low_rate: list[dict[str, Any]] = []
    archive_modes = {"on": [True], "off": [False], "both": [True, False]}[args.low_rate_archive]
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
        for _ in range(args.low_rate_repeat if args.low_rate > 0 else 0):
            for archive in archive_modes:
                low_rate.append(
                    run_low_rate(
                        stack,
                        args.latency_rules.resolve(),
                        args.low_rate,
                        args.low_rate_duration,
                        archive,
                        tmp,
                    )
                )
                print(low_rate_table(low_rate[-1:]).splitlines()[-1], flush=True)
    print(f"\n{os.cpu_count()} cores, {PARTITIONS} partitions, broker on the same machine\n")
    if capacity or latency:
        write_report(args, capacity, latency)
    if low_rate:
        write_low_rate(args, low_rate)


def write_low_rate(args: argparse.Namespace, low_rate: list[dict[str, Any]]) -> None:
    args.low_rate_output.parent.mkdir(parents=True, exist_ok=True)
    # Kept across runs: the back-to-back comparisons the docs quote (taken by hand).
    kept = {}
    if args.low_rate_output.exists():
        kept = {k: v for k, v in json.loads(args.low_rate_output.read_text()).items() if k == "ab"}
    args.low_rate_output.write_text(
        json.dumps(
            {
                "cores": os.cpu_count(),
                "partitions": PARTITIONS,
                "rules": str(args.latency_rules.resolve().relative_to(REPO)),
                "runs": low_rate,
                **kept,
            },
            indent=2,
        )
    )
    print(low_rate_table(low_rate))


def write_report(
    args: argparse.Namespace, capacity: list[dict[str, Any]], latency: list[dict[str, Any]]
) -> None:
    report = {
        "cores": os.cpu_count(),
        "partitions": PARTITIONS,
        "archive": not args.no_archive,
        "capacity": capacity,
        "latency_rules": str(args.latency_rules.resolve().relative_to(REPO)),
        "duration_s": args.duration,
        "repeat": args.repeat,
        "latency": latency,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    if capacity:
        print(capacity_table(capacity) + "\n")
    if latency:
        print(latency_table(latency) + "\n")
        print(summary(latency) + "\n")


if __name__ == "__main__":
    main()

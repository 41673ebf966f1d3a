"""Sizing: partitions, workers, vCPUs and MSK brokers for a rate of payments.

``python -m bench.sizing`` prints the sizing table of the README and of
``docs/operations/scaling.md#sizing``, then the arithmetic of each row. Every input is a
flag whose default is stated with the table: the per-worker figures ``make bench`` measures
(payments per second one worker decides, its CPU seconds per 100 000 payments), the bytes a
payment makes on Kafka (``bench/results/scale_out.json``), the headroom, and the published
limits of MSK's broker types. After a new measurement (or with the archive on), run it with
the new figures and paste the table: ``tests/unit/test_sizing.py`` holds the README, the
docs and ``infra/terraform/terraform.tfvars.example`` to what this module computes.

The rules:

* **workers**: one Faust worker is one process and decides on one core, so the count follows
  from the per-worker rate: the fewest whose busiest worker (Kafka gives a worker whole
  partitions, ``ceil(partitions / workers)`` of them) stays within its rate at the rate
  times the headroom. Each task gets the vCPUs that its worker at its rate keeps busy
  (``rate * CPU-s per 100k / 100 000``, rounded up; one today): the measured CPU is the
  worker's process tree's, so it holds the archive's process (``agents.archive_child``,
  about 0.5 CPU-s per 100 000 payments of it), which runs beside the worker in its task;
* **partitions**: a multiple of 12 (they spread evenly over 1, 2, 3, 4 and 6 workers and
  over three zones' brokers) and at least twice the workers, so that the autoscaler can
  double them before the topics run out (the partition count is fixed once topics exist);
* **brokers**: the AWS Big Data blog's sustained-throughput bound ("Best practices for
  right-sizing your Apache Kafka clusters to optimize performance and cost"): each broker
  writes ``replication / brokers`` of what is produced to its volume, within its EBS
  baseline and the volume's 250 MiB/s, and sends ``(replication - 1 + reads) / brokers`` of
  it over its network baseline; and each keeps ``replication / brokers`` of what is produced
  over the retention on its volume (at most 16 TiB). The fewest brokers (a multiple of the
  zone count, at least one a zone) at the rate times the headroom, then the smallest type
  that needs no more;
* **autoscaling**: a group that keeps up trails by about a second of payments (offsets are
  committed every second), so the lag that adds a worker is 10 s of payments at the rate, and
  the lag under which one may go (with idle CPU) is 1 s.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field, replace

MB = 1_000_000


@dataclass(frozen=True)
class BrokerType:
    """An MSK Standard broker type's published limits (EC2's baselines for its instance)."""

    name: str
    vcpus: int
    ebs_mb_s: float  # baseline EBS bandwidth: 630 Mbit/s is 78.75 MB/s
    network_mb_s: float  # baseline network bandwidth: 0.937 Gbit/s is 117.1 MB/s
    partitions: int  # MSK's recommended partitions per broker, replicas included


BROKER_TYPES = (
    BrokerType("kafka.m7g.large", 2, 78.75, 117.1, 1000),
    BrokerType("kafka.m7g.xlarge", 4, 156.25, 234.5, 1000),
    BrokerType("kafka.m7g.2xlarge", 8, 312.5, 468.75, 2000),
    BrokerType("kafka.m7g.4xlarge", 16, 625.0, 937.5, 4000),
)
GIB = 1024**3
# An MSK volume's throughput unless provisioned (250 MiB/s); the module provisions none.
VOLUME_MB_S = 250 * 1024 * 1024 / MB
VOLUME_MAX_GIB = 16384  # the largest volume MSK gives a broker
# Topics with the pipeline's partition count: payments, alerts, dead letters, the
# repartition topic and four table changelogs. Besides them: the rules topic and Faust's
# leader topic (one partition each) and the broker's __consumer_offsets (50).
PARTITIONED_TOPICS = 8
OTHER_PARTITIONS = 52
# Kinds of Kafka traffic (bench.scale_out's) whose records hold a whole payment: they grow
# with the payment's size; the state changelogs and the alerts do not.
PAYMENT_SIZED = ("payments", "repartition", "dlq")


@dataclass(frozen=True)
class Inputs:
    # One worker, the shipped default rules, archive on, on 2 cores shared with the
    # broker: bench/results/pipeline_capacity_final.json (make bench's capacity run; the
    # lower of two quiet runs, 45 426 and 45 358 payments/s).
    per_worker: int = 45_358
    cpu_per_100k: float = 2.05  # the worker's process tree: its archive process included
    # Of it, the archive's process (bench.archive_cost: 0.41-0.44 CPU-s per 100 000 payments
    # on a quiet machine, 5 runs): it runs beside the worker, on its task's vCPUs.
    archive_cpu_per_100k: float = 0.44
    headroom: float = 1.5  # plan for this times the rate
    # A payment record on Kafka (key, value, batch overhead); the generator's are ~296 B.
    payment_bytes: int = 400
    # Bytes one payment wrote to Kafka, by kind, before replication: bench/results/
    # scale_out.json (default rules, one worker, a backlog of 500 000 on 20 000 cards).
    measured: dict[str, float] = field(
        default_factory=lambda: {
            "payments": 295.9,
            "repartition": 57.1,
            "changelogs": 83.6,
            "alerts": 4.6,
            "dlq": 0.0,
        }
    )
    # How long Kafka keeps records (kafka_retention_hours): history is the archive's job.
    retention_hours: int = 24
    archive: bool = True  # the archive's own group reads payments, alerts and dead letters
    standby_replicas: int = 1  # Faust's default: each changelog is read once more
    replication: int = 3
    zones: int = 3

    def written(self) -> dict[str, float]:
        """Bytes a payment writes to Kafka, by kind, at the planned payment size."""
        scale = self.payment_bytes / self.measured["payments"]
        return {k: v * scale if k in PAYMENT_SIZED else v for k, v in self.measured.items()}

    def task_cores(self) -> float:
        """Cores one worker's task keeps busy at the per-worker rate, its archive's included."""
        cpu = self.cpu_per_100k - (0.0 if self.archive else self.archive_cpu_per_100k)
        return self.per_worker * cpu / 100_000

    def archive_cores(self) -> float:
        """The part of :meth:`task_cores` that is the archive's process."""
        return self.per_worker * self.archive_cpu_per_100k / 100_000 if self.archive else 0.0

    def readers(self) -> dict[str, int]:
        """Consumer groups reading each kind of record once."""
        archive = int(self.archive)
        return {
            "payments": 1 + archive,
            "repartition": 1,
            "changelogs": self.standby_replicas,
            "alerts": 1 + archive,  # the DynamoDB sink
            "dlq": archive,
        }


@dataclass(frozen=True)
class Plan:
    rate: int
    inputs: Inputs
    partitions: int
    workers: int
    broker: BrokerType
    brokers: int
    ingress_mb_s: float  # produced, before replication
    consumed_mb_s: float  # read by consumer groups
    per_broker: dict[str, float]  # at the planned load: MB/s and partitions, with limits

    @property
    def volume_gib(self) -> int:
        """Each broker's volume: its share of the retention at the planned load, in 100s."""
        return 100 * math.ceil(self.per_broker["retained_gib"] / 100)

    @property
    def scale_out_lag(self) -> int:
        """Records of lag that add a worker: 10 s of payments."""
        return self.rate * 10

    @property
    def scale_in_lag(self) -> int:
        """Records of lag under which a worker may go (with idle CPU): 1 s of payments."""
        return self.rate

    @property
    def vcpus_per_worker(self) -> int:
        """A worker's task: the cores it keeps busy at the per-worker rate, rounded up."""
        return max(1, math.ceil(self.inputs.task_cores()))

    @property
    def worker_vcpus(self) -> int:
        return self.workers * self.vcpus_per_worker

    @property
    def broker_vcpus(self) -> int:
        return self.brokers * self.broker.vcpus


def workers_and_partitions(rate: int, inputs: Inputs) -> tuple[int, int]:
    planned = rate * inputs.headroom
    least = math.ceil(planned / inputs.per_worker)
    partitions = 12 * math.ceil(2 * least / 12)
    for workers in range(least, partitions + 1):
        if math.ceil(partitions / workers) * planned / partitions <= inputs.per_worker:
            return workers, partitions
    raise AssertionError("one partition a worker always fits")  # pragma: no cover


def broker_load(
    broker: BrokerType, count: int, ingress: float, consumed: float, inputs: Inputs, partitions: int
) -> dict[str, float]:
    """What each of ``count`` brokers carries at the planned load, and its limits."""
    r, h = inputs.replication, inputs.headroom
    replicas = (partitions * PARTITIONED_TOPICS + OTHER_PARTITIONS) * r
    retained = ingress * MB * h * inputs.retention_hours * 3600 * r / count / GIB
    return {
        "storage_mb_s": round(ingress * h * r / count, 1),
        "storage_limit_mb_s": round(min(broker.ebs_mb_s, VOLUME_MB_S), 1),
        "network_out_mb_s": round((ingress * (r - 1) + consumed) * h / count, 1),
        "network_in_mb_s": round(ingress * h * r / count, 1),
        "network_limit_mb_s": broker.network_mb_s,
        "partitions": math.ceil(replicas / count),
        "partitions_limit": broker.partitions,
        "retained_gib": round(retained),
        "retained_limit_gib": VOLUME_MAX_GIB,
    }


def brokers_needed(broker: BrokerType, ingress: float, consumed: float, inputs: Inputs) -> int:
    r, h, zones = inputs.replication, inputs.headroom, inputs.zones
    storage = ingress * h * r / min(broker.ebs_mb_s, VOLUME_MB_S)
    network = max(ingress * (r - 1) + consumed, ingress * r) * h / broker.network_mb_s
    retained = ingress * MB * h * inputs.retention_hours * 3600 * r / GIB / VOLUME_MAX_GIB
    return max(zones, zones * math.ceil(max(storage, network, retained) / zones))


def plan(rate: int, inputs: Inputs | None = None) -> Plan:
    inputs = inputs or Inputs()
    workers, partitions = workers_and_partitions(rate, inputs)
    written, readers = inputs.written(), inputs.readers()
    ingress = rate * sum(written.values()) / MB
    consumed = rate * sum(size * readers.get(kind, 0) for kind, size in written.items()) / MB
    options = []
    for broker in BROKER_TYPES:
        count = brokers_needed(broker, ingress, consumed, inputs)
        load = broker_load(broker, count, ingress, consumed, inputs, partitions)
        if load["partitions"] <= broker.partitions:
            options.append((count, BROKER_TYPES.index(broker), broker))
    count, _, broker = min(options)
    return Plan(
        rate,
        inputs,
        partitions,
        workers,
        broker,
        count,
        round(ingress, 1),
        round(consumed, 1),
        broker_load(broker, count, ingress, consumed, inputs, partitions),
    )


def thousands(n: float) -> str:
    return f"{n:,.0f}".replace(",", " ")


def table(plans: list[Plan]) -> str:
    lines = [
        "| payments/s | partitions | workers | vCPUs: workers + brokers | MSK brokers |",
        "|---:|---:|---:|---|---|",
    ]
    for p in plans:
        lines.append(
            f"| {thousands(p.rate)} | {p.partitions} | {p.workers}"
            f" | {p.worker_vcpus} + {p.broker_vcpus}"
            f" | {p.brokers} \N{MULTIPLICATION SIGN} {p.broker.name},"
            f" {thousands(p.volume_gib)} GiB each |"
        )
    return "\n".join(lines)


def arithmetic(p: Plan) -> str:
    """The reasoning behind a row, as a markdown list under its rate."""
    i = p.inputs
    planned = p.rate * i.headroom
    least = math.ceil(planned / i.per_worker)
    busiest = math.ceil(p.partitions / p.workers)
    written = i.written()
    load = p.per_broker
    return "\n".join(
        [
            f"**{thousands(p.rate)} payments/s**, planned at {i.headroom:g} times:"
            f" {thousands(planned)}/s.",
            "",
            f"- Workers: {thousands(planned)} / {thousands(i.per_worker)} ="
            f" {planned / i.per_worker:.2f}, so at least {least}. With {p.partitions} partitions"
            f" the busiest of {p.workers} workers holds {busiest}:"
            f" {thousands(planned * busiest / p.partitions)}/s, within"
            f" {thousands(i.per_worker)}. At its rate a worker keeps"
            f" {i.task_cores():.2f} of a core busy"
            + (f" (its archive's process {i.archive_cores():.2f} of it)" if i.archive else "")
            + (
                ": one vCPU each."
                if p.vcpus_per_worker == 1
                else f": {p.vcpus_per_worker} vCPUs each."
            ),
            f"- Partitions: a multiple of 12, at least 2 \N{MULTIPLICATION SIGN} {least}:"
            f" {p.partitions}.",
            "- Kafka: a payment writes "
            + " + ".join(f"{v:.0f} ({k})" for k, v in written.items() if round(v))
            + f" = {sum(written.values()):.0f} B: {p.ingress_mb_s} MB/s produced at the rate,"
            f" {p.consumed_mb_s} MB/s read by the consumer groups.",
            f"- Brokers: {p.brokers} \N{MULTIPLICATION SIGN} {p.broker.name}; each, at the"
            f" planned load, writes {load['storage_mb_s']} MB/s to its volume (limit"
            f" {load['storage_limit_mb_s']}), sends {load['network_out_mb_s']} MB/s (limit"
            f" {load['network_limit_mb_s']}), keeps {thousands(load['retained_gib'])} GiB for"
            f" {i.retention_hours} h (limit {thousands(load['retained_limit_gib'])}) and holds"
            f" {load['partitions']:.0f} partition replicas (recommended at most"
            f" {load['partitions_limit']:.0f}).",
            f"- Autoscaling: a worker is added at {thousands(p.scale_out_lag)} records of lag,"
            f" removed under {thousands(p.scale_in_lag)}.",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    defaults = Inputs()
    parser = argparse.ArgumentParser(prog="python -m bench.sizing", description=__doc__)
    parser.add_argument("--rate", type=int, action="append", help="payments/s (repeatable)")
    parser.add_argument("--per-worker", type=int, default=defaults.per_worker)
    parser.add_argument("--cpu-per-100k", type=float, default=defaults.cpu_per_100k)
    parser.add_argument("--archive-cpu-per-100k", type=float, default=defaults.archive_cpu_per_100k)
    parser.add_argument("--headroom", type=float, default=defaults.headroom)
    parser.add_argument("--payment-bytes", type=int, default=defaults.payment_bytes)
    parser.add_argument("--retention-hours", type=int, default=defaults.retention_hours)
    parser.add_argument("--no-archive", action="store_true", help="no worker runs the archive")
    args = parser.parse_args(argv)
    inputs = replace(
        defaults,
        per_worker=args.per_worker,
        cpu_per_100k=args.cpu_per_100k,
        archive_cpu_per_100k=args.archive_cpu_per_100k,
        headroom=args.headroom,
        payment_bytes=args.payment_bytes,
        retention_hours=args.retention_hours,
        archive=not args.no_archive,
    )
    plans = [plan(rate, inputs) for rate in args.rate or [100_000, 1_000_000]]
    print(table(plans) + "\n")
    for p in plans:
        print(arithmetic(p) + "\n")


if __name__ == "__main__":
    main()

"""How many partitions the worker uses, decided once at start-up from the topics themselves.

Faust co-partitions the payments topic, the repartition topic and every table's
changelog: a table write goes to the changelog partition of the event that caused
it. If ``FRAUD_PARTITIONS`` disagrees with an existing topic, the first table write
fails (``PartitionsMismatch``), the agent crashes, Faust restarts it past the record
and commits: a crash loop that drops payments. So the worker checks before it
consumes anything and refuses to start, in one line naming both numbers; when the
setting is unset it takes the payments topic's own count and says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient

from app.worker.kafka_security import kafka_options

DEFAULT_PARTITIONS = 8


class PartitionMismatch(RuntimeError):
    """The configured or derived partition count disagrees with a topic that exists."""


@dataclass(frozen=True, slots=True)
class PartitionPlan:
    partitions: int
    source: str  # where the number came from, for the start-up log line


async def existing_partition_counts(bootstrap: str, topics: Iterable[str]) -> dict[str, int]:
    """Partition count of each of ``topics`` that exists (absent ones are left out)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_options())
    await admin.start()
    try:
        # Only topics that exist are described: a metadata request naming a missing topic
        # makes a broker with auto-creation on create it, with its default cleanup policy
        # (delete), before Faust can create a changelog compacted.
        existing = set(await admin.list_topics())
        wanted = [topic for topic in topics if topic in existing]
        described = await admin.describe_topics(wanted) if wanted else []
    finally:
        await admin.close()
    return {
        str(topic["topic"]): len(topic["partitions"])
        for topic in described
        if not topic.get("error_code") and topic.get("partitions")
    }


def plan_partitions(
    configured: int | None,
    payments_topic: str,
    co_partitioned: Iterable[str],
    existing: Mapping[str, int],
) -> PartitionPlan:
    """The partition count to use, or :class:`PartitionMismatch` naming both numbers.

    ``co_partitioned`` are the topics Faust creates itself (repartition topic,
    changelogs): each that exists already must have the same count.
    """
    found = existing.get(payments_topic)
    if found is not None and configured is not None and found != configured:
        raise PartitionMismatch(
            f"FRAUD_PARTITIONS={configured} but topic {payments_topic!r} has {found}"
            f" partitions; set FRAUD_PARTITIONS={found} or leave it unset"
        )
    if found is not None:
        plan = PartitionPlan(
            found,
            f"topic {payments_topic!r}"
            + (" (FRAUD_PARTITIONS agrees)" if configured else " (FRAUD_PARTITIONS unset)"),
        )
    elif configured is not None:
        plan = PartitionPlan(configured, "FRAUD_PARTITIONS")
    else:
        plan = PartitionPlan(DEFAULT_PARTITIONS, "the default (no payments topic yet)")
    for topic in sorted(co_partitioned):
        count = existing.get(topic)
        if count is not None and count != plan.partitions:
            raise PartitionMismatch(
                f"topic {topic!r} has {count} partitions but {plan.source} gives"
                f" {plan.partitions}; its state cannot be co-partitioned (delete the topic"
                f" or use {count} partitions)"
            )
    return plan

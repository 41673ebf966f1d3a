"""How many partitions the worker uses, decided once at start-up from the topics themselves.

Faust co-partitions the payments topic, the repartition topic and every table's
changelog: a table write goes to the changelog partition of the event that caused
it. If ``FRAUD_PARTITIONS`` disagrees with an existing topic, the first table write
fails (``PartitionsMismatch``), the agent crashes, Faust restarts it past the record
and commits: a crash loop that drops payments. So the worker checks before it
consumes anything and refuses to start, in one line naming both numbers; when the
setting is unset it takes the payments topic's own count and says so.

Likewise the state changelogs' retention: Faust sets ``retention.ms`` (the state retention,
``FRAUD_STATE_RETENTION``) only when it creates a changelog. A changelog that exists with a
shorter one (created before the setting was raised for a 60-day rule) would forget, on the
next restore, the keys quiet for longer than it, while the worker's own sweep keeps them:
the worker refuses to start, naming the topic, both values and the command that fixes it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from app.worker.kafka_security import kafka_options

log = logging.getLogger(__name__)

DEFAULT_PARTITIONS = 8


class PartitionMismatch(RuntimeError):
    """The configured or derived partition count disagrees with a topic that exists."""


class RetentionTooShort(RuntimeError):
    """A state changelog that exists deletes records sooner than the state retention."""


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


async def topic_retentions(bootstrap: str, topics: Iterable[str]) -> dict[str, tuple[str, int]]:
    """(cleanup.policy, retention.ms) of each of ``topics`` that exists."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_options())
    await admin.start()
    try:
        existing = set(await admin.list_topics())  # never name a missing topic (see above)
        wanted = [topic for topic in topics if topic in existing]
        resources = [ConfigResource(ConfigResourceType.TOPIC, topic) for topic in wanted]
        responses = await admin.describe_configs(resources) if wanted else []
    finally:
        await admin.close()
    found: dict[str, tuple[str, int]] = {}
    for response in responses:
        for error_code, _, _, name, entries in response.resources:
            if error_code:  # e.g. not authorised: said, not fatal
                log.warning(
                    "cannot read the configuration of %r (error %d): its retention is not"
                    " checked against FRAUD_STATE_RETENTION",
                    name,
                    error_code,
                )
                continue
            values = {entry[0]: entry[1] for entry in entries}
            found[str(name)] = (
                str(values.get("cleanup.policy", "")),
                int(values.get("retention.ms") or -1),
            )
    return found


def check_retentions(existing: Mapping[str, tuple[str, int]], retention_ms: int) -> None:
    """:class:`RetentionTooShort` if a changelog of ``existing`` deletes by age (its cleanup
    policy has ``delete``) sooner than ``retention_ms`` (-1: never deletes by age)."""
    for topic, (policy, found_ms) in sorted(existing.items()):
        if "delete" in policy.split(",") and 0 <= found_ms < retention_ms:
            raise RetentionTooShort(
                f"changelog {topic!r} has retention.ms={found_ms} but FRAUD_STATE_RETENTION"
                f" needs {retention_ms}: a restore would lose the keys quiet for longer; run"
                f" kafka-configs.sh --alter --entity-type topics --entity-name {topic}"
                f" --add-config retention.ms={retention_ms} (docs/how-to/upgrade.md)"
            )

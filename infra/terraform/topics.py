"""Create the pipeline's Kafka topics: the one-shot admin task of ``modules/workers``.

    python -m infra.terraform.topics    # in the worker image; FRAUD_* from the task definition

Terraform's AWS provider cannot create Kafka topics and the MSK configuration turns
auto-creation off, so this runs once before the workers start (the output
``create_topics_command`` runs it). It creates what is missing and checks what exists, with
the workers' own settings and Kafka security (``FRAUD_BROKER``, ``FRAUD_KAFKA_*``):

- the payments, alerts and DLQ topics with ``FRAUD_PARTITIONS`` partitions;
- the rules topic compacted, with one partition (every worker reads all of it);
- the labels topic (dispositions and chargebacks) compacted, with one partition;
- ``FRAUD_TOPIC_REPLICATION`` replicas each.

Exit 0 when every topic is as wanted; exit 2, naming each difference, when one exists with
another partition count or cleanup policy (it is never altered: repartitioning a keyed
topic moves cards away from their state). The workers create Faust's internal topics
(changelogs, repartition) themselves with the same partition count.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Kafka's TOPIC_ALREADY_EXISTS: a racing creator, or a topic made since we listed.
TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int
    config: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ExistingTopic:
    partitions: int
    cleanup_policy: str | None


def wanted_topics(
    *,
    payments: str,
    alerts: str,
    dlq: str,
    rules: str,
    partitions: int | None,
    replication: int,
    labels: str = "fraud.labels",
    lists: str = "fraud.lists",
    suppressions: str = "fraud.suppressions",
) -> list[TopicSpec]:
    """The topics the app expects, as the local stack creates them."""
    if partitions is None:
        raise ValueError("FRAUD_PARTITIONS must be set: it is the partition count to create")
    return [
        TopicSpec(payments, partitions, replication, {"cleanup.policy": "delete"}),
        TopicSpec(alerts, partitions, replication, {"cleanup.policy": "delete"}),
        TopicSpec(dlq, partitions, replication, {"cleanup.policy": "delete"}),
        TopicSpec(rules, 1, replication, {"cleanup.policy": "compact"}),
        TopicSpec(labels, 1, replication, {"cleanup.policy": "compact"}),
        TopicSpec(lists, 1, replication, {"cleanup.policy": "compact"}),
        TopicSpec(suppressions, 1, replication, {"cleanup.policy": "compact"}),
    ]


def differences(wanted: Sequence[TopicSpec], existing: Mapping[str, ExistingTopic]) -> list[str]:
    """What differs between the wanted topics and those that exist, one line each."""
    found: list[str] = []
    for topic in wanted:
        have = existing.get(topic.name)
        if have is None:
            found.append(f"topic {topic.name!r} does not exist")
            continue
        if have.partitions != topic.partitions:
            found.append(
                f"topic {topic.name!r} has {have.partitions} partitions, not {topic.partitions}"
            )
        policy = topic.config.get("cleanup.policy")
        if policy is not None and have.cleanup_policy is not None and have.cleanup_policy != policy:
            found.append(
                f"topic {topic.name!r} has cleanup.policy={have.cleanup_policy}, not {policy}"
            )
    return found


def cleanup_policies(responses: Sequence[Any]) -> dict[str, str]:
    """``cleanup.policy`` per topic from aiokafka's DescribeConfigs responses."""
    policies: dict[str, str] = {}
    for response in responses:
        for resource in response.resources:
            error_code, _message, _type, name, entries = resource[:5]
            if error_code:
                continue
            for entry in entries:
                if entry[0] == "cleanup.policy":
                    policies[str(name)] = str(entry[1])
    return policies


async def ensure_topics(
    wanted: Sequence[TopicSpec], bootstrap: str, options: Mapping[str, Any]
) -> list[str]:
    """Create the missing topics, then return the differences that remain."""
    from aiokafka.admin import (  # noqa: PLC0415 - the image has aiokafka, the tests need not
        AIOKafkaAdminClient,
        ConfigResource,
        ConfigResourceType,
        NewTopic,
    )

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **options)
    await admin.start()
    try:
        names = set(await admin.list_topics())
        new = [
            NewTopic(t.name, t.partitions, t.replication, topic_configs=dict(t.config))
            for t in wanted
            if t.name not in names
        ]
        if new:
            response = await admin.create_topics(new)
            for name, code, *rest in response.topic_errors:
                if code not in (0, TOPIC_ALREADY_EXISTS):
                    return [f"creating topic {name!r} failed: error {code} {rest}"]
                print(f"created topic {name!r}" if code == 0 else f"topic {name!r} exists")
        described = await admin.describe_topics([t.name for t in wanted])
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t.name) for t in wanted]
        )
    finally:
        await admin.close()
    policies = cleanup_policies(configs)
    existing = {
        str(topic["topic"]): ExistingTopic(
            len(topic["partitions"]), policies.get(str(topic["topic"]))
        )
        for topic in described
        if not topic.get("error_code") and topic.get("partitions")
    }
    return differences(wanted, existing)


def main() -> int:
    from app.rules_admin.topic import bootstrap_servers  # noqa: PLC0415
    from app.worker.kafka_security import client_options  # noqa: PLC0415
    from app.worker.settings import SettingsError, load_settings  # noqa: PLC0415

    try:
        settings = load_settings()
        wanted = wanted_topics(
            payments=settings.topic_payments,
            alerts=settings.topic_alerts,
            dlq=settings.topic_dlq,
            rules=settings.topic_rules,
            labels=settings.topic_labels,
            lists=settings.topic_lists,
            suppressions=settings.topic_suppressions,
            partitions=settings.partitions,
            replication=settings.topic_replication,
        )
    except (SettingsError, ValueError) as exc:
        print(f"topics: {exc}", file=sys.stderr)
        return 2
    problems = asyncio.run(
        ensure_topics(wanted, bootstrap_servers(settings.broker), client_options(settings))
    )
    for problem in problems:
        print(f"topics: {problem}", file=sys.stderr)
    if problems:
        return 2
    for topic in wanted:
        print(f"topic {topic.name!r}: {topic.partitions} partitions, {dict(topic.config)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

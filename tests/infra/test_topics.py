"""infra/terraform/topics.py: the one-shot task that creates the Kafka topics on MSK."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from infra.local.stack import default_topics
from infra.terraform.topics import (
    ExistingTopic,
    TopicSpec,
    cleanup_policies,
    differences,
    wanted_topics,
)

NAMES = {"payments": "payments.raw", "alerts": "fraud.alerts", "dlq": "payments.dlq"}


def wanted(partitions: int | None = 12) -> list[TopicSpec]:
    return wanted_topics(**NAMES, rules="fraud.rules", partitions=partitions, replication=3)


def test_the_topics_are_those_the_local_stack_creates() -> None:
    local = {
        t.name: (t.partitions, dict(t.config).get("cleanup.policy")) for t in default_topics(12)
    }
    on_aws = {t.name: (t.partitions, t.config["cleanup.policy"]) for t in wanted(12)}
    # Locally an unset cleanup.policy is Kafka's default, delete.
    assert on_aws == {name: (p, policy or "delete") for name, (p, policy) in local.items()}
    assert {t.replication for t in wanted(12)} == {3}


def test_the_rules_topic_is_compacted_with_one_partition_whatever_the_count() -> None:
    rules = next(t for t in wanted(48) if t.name == "fraud.rules")
    assert (rules.partitions, rules.config["cleanup.policy"]) == (1, "compact")


def test_the_labels_topic_is_compacted_with_one_partition_whatever_the_count() -> None:
    labels = next(t for t in wanted(48) if t.name == "fraud.labels")
    assert (labels.partitions, labels.config["cleanup.policy"]) == (1, "compact")


def test_the_lists_and_suppressions_topics_are_compacted_with_one_partition() -> None:
    for name in ("fraud.lists", "fraud.suppressions"):
        topic = next(t for t in wanted(48) if t.name == name)
        assert (topic.partitions, topic.config["cleanup.policy"]) == (1, "compact")


def test_fraud_partitions_must_be_set() -> None:
    with pytest.raises(ValueError, match="FRAUD_PARTITIONS"):
        wanted(None)


def test_topics_as_wanted_show_no_difference() -> None:
    existing = {t.name: ExistingTopic(t.partitions, t.config["cleanup.policy"]) for t in wanted(12)}
    assert differences(wanted(12), existing) == []


def test_every_difference_is_named_and_nothing_is_altered() -> None:
    existing = {
        "payments.raw": ExistingTopic(8, "delete"),
        "fraud.alerts": ExistingTopic(12, None),  # policy unreadable: not held against it
        "fraud.rules": ExistingTopic(1, "delete"),
    }
    assert differences(wanted(12), existing) == [
        "topic 'payments.raw' has 8 partitions, not 12",
        "topic 'payments.dlq' does not exist",
        "topic 'fraud.rules' has cleanup.policy=delete, not compact",
        "topic 'fraud.labels' does not exist",
        "topic 'fraud.lists' does not exist",
        "topic 'fraud.suppressions' does not exist",
    ]


def test_cleanup_policies_are_read_from_describe_configs_responses() -> None:
    entries_rules = [("retention.ms", "604800000", False, 5, False), ("cleanup.policy", "compact")]
    response = SimpleNamespace(
        resources=[
            (0, None, 2, "fraud.rules", entries_rules),
            (0, None, 2, "payments.raw", [("cleanup.policy", "delete", False, 5, False)]),
            (3, "unknown topic", 2, "missing", []),
        ]
    )
    assert cleanup_policies([response]) == {"fraud.rules": "compact", "payments.raw": "delete"}


def test_the_script_runs_as_program_text_the_way_the_ecs_task_runs_it() -> None:
    # The create-topics task runs topics.py's source with `python -c` (the worker image
    # holds the installed app, not infra/). Without FRAUD_PARTITIONS it stops before Kafka.
    source = (Path(__file__).resolve().parents[2] / "infra/terraform/topics.py").read_text()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
    done = subprocess.run(
        [sys.executable, "-c", source],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "FRAUD_PARTITIONS must be set" in done.stderr

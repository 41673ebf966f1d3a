"""app.worker.partition_check: the partition count is settled at start-up from the topics;
a mismatch stops the worker."""

from __future__ import annotations

import pytest

from app.worker.partition_check import (
    DEFAULT_PARTITIONS,
    PartitionMismatch,
    RetentionTooShort,
    check_retentions,
    plan_partitions,
)

CHANGELOG = "fraud-detection-card-state-changelog"
REGROUP = "fraud-detection-payments-by-group"


def test_an_unset_count_takes_the_payments_topics_own() -> None:
    plan = plan_partitions(None, "payments.raw", [CHANGELOG], {"payments.raw": 4})
    assert plan.partitions == 4 and "FRAUD_PARTITIONS unset" in plan.source


def test_without_a_payments_topic_the_setting_or_the_default_decides() -> None:
    assert plan_partitions(None, "payments.raw", [], {}).partitions == DEFAULT_PARTITIONS
    assert plan_partitions(12, "payments.raw", [], {}).partitions == 12


def test_a_setting_that_disagrees_with_the_topic_is_refused_naming_both_numbers() -> None:
    with pytest.raises(PartitionMismatch) as caught:
        plan_partitions(8, "payments.raw", [], {"payments.raw": 4})
    assert str(caught.value).startswith(
        "FRAUD_PARTITIONS=8 but topic 'payments.raw' has 4 partitions"
    )
    assert plan_partitions(4, "payments.raw", [], {"payments.raw": 4}).partitions == 4


def test_an_existing_changelog_with_another_count_is_refused() -> None:
    existing = {"payments.raw": 4, CHANGELOG: 8, REGROUP: 4}
    with pytest.raises(PartitionMismatch) as caught:
        plan_partitions(None, "payments.raw", [REGROUP, CHANGELOG], existing)
    assert f"topic '{CHANGELOG}' has 8 partitions" in str(caught.value)
    assert "gives 4" in str(caught.value)


def test_a_state_changelog_deleting_sooner_than_the_retention_is_refused_naming_the_fix() -> None:
    week = 8 * 24 * 3600 * 1000
    sixty_one_days = 61 * 24 * 3600 * 1000
    with pytest.raises(RetentionTooShort) as caught:
        check_retentions({CHANGELOG: ("compact,delete", week)}, sixty_one_days)
    assert str(caught.value).startswith(
        f"changelog '{CHANGELOG}' has retention.ms={week} but FRAUD_STATE_RETENTION needs"
        f" {sixty_one_days}"
    )
    assert f"--entity-name {CHANGELOG} --add-config retention.ms={sixty_one_days}" in str(
        caught.value
    )
    # Long enough, compacted only (never deleted by age), or an infinite retention: kept.
    check_retentions({CHANGELOG: ("compact,delete", sixty_one_days)}, sixty_one_days)
    check_retentions({CHANGELOG: ("compact", week)}, sixty_one_days)
    check_retentions({CHANGELOG: ("compact,delete", -1)}, sixty_one_days)

"""app.detection.aggregates: each aggregate is a small type: its value over pool entries,
its text, its parsing."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.detection.aggregates import (
    Aggregate,
    Count,
    DistinctCount,
    Entry,
    SumOfAmounts,
    parse_aggregate,
)

ENTRIES: list[Entry] = [
    (1, "t1", "1000.10", "DE", "dev-a", ""),
    (2, "t2", "0.90", "DE", "dev-b", ""),
    (3, "t3", "5", "FR", "dev-a", ""),
]


def test_values_over_pool_entries_are_exact() -> None:
    assert Count().value(ENTRIES) == 3
    assert SumOfAmounts().value(ENTRIES) == Decimal("1006.00")
    assert DistinctCount("device_id").value(ENTRIES) == 2


@pytest.mark.parametrize("aggregate", [Count(), SumOfAmounts(), DistinctCount("device_id")])
def test_a_window_slid_over_the_entries_always_equals_the_value_afresh(
    aggregate: Aggregate,
) -> None:
    window = aggregate.window()
    for index, entry in enumerate(ENTRIES):
        window.add(entry)
        assert window.value() == aggregate.value(ENTRIES[: index + 1])
    for index, entry in enumerate(ENTRIES):
        window.remove(entry)
        assert window.value() == aggregate.value(ENTRIES[index + 1 :])


@pytest.mark.parametrize("text", ["count", "sum(amount)", "distinct_count(device_id)"])
def test_text_round_trips(text: str) -> None:
    assert parse_aggregate(text, ["device_id"]).text == text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("avg(amount)", "must be count"),
        ("distinct_count(pan)", "not a payment field"),
        (3, "must be count"),
    ],
)
def test_bad_aggregates_say_why(text: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_aggregate(text, ["device_id"])

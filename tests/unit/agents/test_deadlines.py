"""Absence deadlines on the batch path (agents.deadlines), with the in-memory fakes of
tests/unit/agents/test_batch.py: time passes by the partition's payments, checked before
each one, and the alert goes out before the state that resolved its A is written, also when
a batch that moved the clock never wrote."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

import agents.batch as batch_module
from agents import deadlines
from app.detection.models import Payment
from app.detection.rules import AbsenceRule
from app.worker.failures import Failures
from tables.store import encode_key
from tests import factories
from tests.unit.agents.test_batch import NOW, World, world  # noqa: F401 (the fixture)
from tests.unit.detection.test_absence import absence_rule

RULE: AbsenceRule = absence_rule()  # A >= 500, B < 1, within 120 s
PAST_DUE = NOW + 120_000 + 60_000 + 1  # the deadline and the allowed lateness passed


def decide(world: World, payments: list[Payment]) -> Any:  # noqa: F811
    """One batch of ``payments``, its sends acknowledged."""
    try:
        return world.decide(payments)
    finally:
        world.producer.acks.clear()


@pytest.fixture
def absent(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:  # noqa: F811
    patched = vars(batch_module)  # what the world fixture put in the batch module
    book = patched["rulebook"]
    book.apply(RULE.rule_id.encode(), RULE.to_bytes())
    monkeypatch.setattr(deadlines, "rulebook", book)
    monkeypatch.setattr(deadlines, "card_state", world.card_state)
    monkeypatch.setattr(deadlines, "app", patched["app"])
    monkeypatch.setattr(deadlines, "recent_alert_ids", patched["recent_alert_ids"])
    monkeypatch.setattr(deadlines, "_partitions", {})
    store = world.card_state.data

    def items_of(partition: int, after: bytes | None, limit: int) -> list[tuple[bytes, bytes]]:
        items = sorted((encode_key(key), value) for key, value in store.values.items())
        return [(k, v) for k, v in items if after is None or k > after][:limit]

    monkeypatch.setattr(store, "items_of", items_of, raising=False)
    yield world


def test_a_b_after_the_partition_passed_the_deadline_is_too_late_even_in_the_same_batch(
    absent: World,
) -> None:
    a = factories.payment("tok_x", "a", "600", NOW)
    tick = factories.payment("tok_y", "tick", "10", PAST_DUE)
    b = factories.payment("tok_x", "b", "0.5", NOW + 1_000)
    decide(absent, [a, tick, b])
    (alert,) = [x for x in absent.published if x.rule_id == RULE.rule_id]
    assert alert.txn_ids == ("a",) and alert.group_key == "tok_x"
    steps = [step for step, _ in absent.log]
    assert steps.index("publish") < steps.index("stage"), "the alert before the state"
    assert "a" in absent.card_state.data.state("tok_x").rules[RULE.rule_id].used


def test_a_b_before_the_partition_passes_the_deadline_cancels(absent: World) -> None:
    decide(absent, [factories.payment("tok_x", "a", "600", NOW)])
    decide(
        absent,
        [
            factories.payment("tok_x", "b", "0.5", NOW + 1_000),
            factories.payment("tok_y", "tick", "10", PAST_DUE),
        ],
    )
    assert not [x for x in absent.published if x.rule_id == RULE.rule_id]


def test_a_batch_that_never_wrote_leaves_the_deadlines_to_be_rebuilt_from_the_store(
    absent: World,
) -> None:
    decide(absent, [factories.payment("tok_x", "a", "600", NOW)])
    tick = factories.payment("tok_y", "tick", "10", PAST_DUE)
    absent.consumer.ours = False  # a rebalance between the alerts and the writes
    assert decide(absent, [tick]) is None
    assert "a" not in absent.card_state.data.state("tok_x").rules[RULE.rule_id].used
    absent.consumer.ours = True
    absent.published.clear()
    decide(absent, [tick])  # fetched again: the pending A is still due
    (alert,) = [x for x in absent.published if x.rule_id == RULE.rule_id]
    assert alert.txn_ids == ("a",)
    assert "a" in absent.card_state.data.state("tok_x").rules[RULE.rule_id].used


def test_without_an_absence_rule_nothing_is_indexed(world: World) -> None:  # noqa: F811
    decide(world, [factories.payment("tok_x", "a", "600", NOW)])
    assert all(not part.active for part in deadlines._partitions.values())


def test_a_corrupt_stored_state_is_counted_and_left_out_and_the_partition_goes_on(
    absent: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    counted = Failures()
    monkeypatch.setattr(deadlines, "failures", counted)
    monkeypatch.setattr("agents.delivery.failures", counted)
    decide(absent, [factories.payment("tok_x", "a", "600", NOW)])
    # A state holding an absence rule's state that does not decode; then a restart, so the
    # deadlines are rebuilt from the store.
    absent.card_state.data.values["tok_bad"] = b'{"r":{"%s":{"k":"absence","v":' % (
        RULE.rule_id.encode()
    )
    monkeypatch.setattr(deadlines, "_partitions", {})
    tick = factories.payment("tok_y", "tick", "10", PAST_DUE)
    on_bad = factories.payment("tok_bad", "c", "10", PAST_DUE)
    with caplog.at_level(logging.ERROR):
        assert decide(absent, [tick, on_bad]) is not None, "the batch is decided, not refetched"
    (alert,) = [x for x in absent.published if x.rule_id == RULE.rule_id]
    assert alert.txn_ids == ("a",), "the other keys' deadlines were rebuilt"
    assert absent.dead == [("1", "internal_error")], "the bad key's payment, as before"
    assert sum(counted.internal_errors.values()) == 2  # the rebuild's and the payment's
    assert any("tok_bad" in r.getMessage() for r in caplog.records if r.name == deadlines.__name__)
    assert absent.card_state.data.values["tok_bad"].startswith(b'{"r":'), "left as it was"

"""app.delivery.published: the bounded set of alert ids already published."""

from __future__ import annotations

import dataclasses

from app.delivery.published import PublishedAlerts, RecentIds
from app.detection.engine import KeyState, evaluate
from app.detection.models import Alert, Payment
from app.detection.rules import SEED_RULE
from tests.factories import payment


def test_recent_ids_keep_the_newest_and_stay_bounded() -> None:
    ids = RecentIds(capacity=3)
    for item in ["a", "b", "a", "c", "d"]:
        ids.add(item)
    assert "a" not in ids  # the oldest went first
    assert all(item in ids for item in ["b", "c", "d"])
    assert len(ids) == 3


def alerts_of(state: KeyState, payments: list[Payment]) -> list[Alert]:
    found: list[Alert] = []
    for p in payments:
        found += evaluate(state, p, p.card_id, [SEED_RULE], 60_000, 0, 0).alerts
    return found


def test_a_replay_from_a_state_that_forgot_its_events_pairs_none_of_them_again() -> None:
    # Live: a stray high-value payment s, then a burst p1 p2 p3 a few minutes later. The
    # alert takes s p1 p2; p3 waits. Later payments of the same batch expired the state and
    # its record was deleted, but the batch's offsets were not committed yet.
    t0 = 1_795_940_000_000
    s = payment(txn_id="s", ts_ms=t0)
    burst = [payment(txn_id=f"p{i}", ts_ms=t0 + 170_000 + i * 1000) for i in (1, 2, 3)]
    (published,) = alerts_of(KeyState(), [s, *burst])
    assert published.txn_ids == ("s", "p1", "p2")
    # The replay starts after s (committed) from no state at all.
    (invented,) = alerts_of(KeyState(), burst)
    assert invented.txn_ids == ("p1", "p2", "p3")  # what the chaos test caught
    recent = PublishedAlerts()
    recent.add_alert(Alert.from_json(published.to_json()))  # as read from the topic's tail
    replayed = KeyState()
    recent.mark_used(replayed, "tok_1", [SEED_RULE])
    assert alerts_of(replayed, burst) == []  # p1 p2 are known used; p3 waits, as live
    assert [entry[1] for entry in replayed.rules[SEED_RULE.rule_id].pool] == ["p3"]


def test_a_replay_from_a_state_stored_before_its_alert_continues_as_live() -> None:
    # A rebalance came between the alert (s, p1, p2) and its state write: the replay starts
    # at p1 from the state that pools s. Live, p3 p4 p5 then made the next alert.
    t0 = 1_795_940_000_000
    s = payment(txn_id="s", ts_ms=t0)
    later = [payment(txn_id=f"p{i}", ts_ms=t0 + 100_000 + i * 1000) for i in range(1, 6)]
    live = alerts_of(KeyState(), [s, *later])
    assert [a.txn_ids for a in live] == [("s", "p1", "p2"), ("p3", "p4", "p5")]
    stored = KeyState()
    assert alerts_of(stored, [s]) == []  # pools s
    recent = PublishedAlerts()
    recent.add_alert(live[0])
    recent.mark_used(stored, "tok_1", [SEED_RULE])
    assert [a.txn_ids for a in alerts_of(stored, later)] == [("p3", "p4", "p5")]


def test_the_events_of_evicted_alerts_are_forgotten_with_them() -> None:
    recent = PublishedAlerts(capacity=2)
    for n in range(3):
        recent.record(f"a{n}", ("r", "k"), (f"t{n}",), 1000)
    assert "a0" not in recent
    assert set(recent.used("r", "k")) == {"t1", "t2"}
    for n in range(3, 5):
        recent.record(f"a{n}", ("r", f"other{n}"), (f"t{n}",), 1000)
    # Every alert of key "k" is evicted: its state is no longer topped up.
    assert recent.used("r", "k") == {}
    state = KeyState()
    recent.mark_used(state, "k", [SEED_RULE])
    assert state.rules == {}
    recent.mark_used(state, "other4", [dataclasses.replace(SEED_RULE, rule_id="r")])
    assert state.rules["r"].used == {"t4": (1000, "")}


def test_a_replay_across_a_rule_version_bump_pairs_none_of_the_alerted_events_again() -> None:
    # Version 1 alerted on p1 p2 p3, then the worker died before the state was written and
    # the rule went to version 2. The replay evaluates p1 p2 p3 with version 2: the events
    # are used already, whatever version used them.
    t0 = 1_795_940_000_000
    burst = [payment(txn_id=f"p{i}", ts_ms=t0 + i * 1000) for i in (1, 2, 3)]
    (published,) = alerts_of(KeyState(), burst)
    recent = PublishedAlerts()
    recent.add_alert(Alert.from_json(published.to_json()))
    v2 = dataclasses.replace(SEED_RULE, version=2)
    replayed = KeyState()
    recent.mark_used(replayed, "tok_1", [v2])
    again = [evaluate(replayed, p, p.card_id, [v2], 60_000, 0, 0) for p in burst]
    assert [a for v in again for a in v.alerts] == []
    assert all(v.duplicate for v in again)

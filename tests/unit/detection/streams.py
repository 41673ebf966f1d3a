"""Streams of payments for the engine's tests: payments by number, arrival orders within
the allowed lateness, and a run of the engine over them (with every state stored and
read back between payments when asked, as the tables do)."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from app.detection.engine import MAX_KEY_EVENTS, KeyState, evaluate
from app.detection.models import Alert, Payment
from app.detection.rules import SEED_RULE, AggregateRule, Rule
from app.detection.state import HistoryState
from tests import factories

LATENESS_MS = 60_000
BASE_MS = 1_795_000_000_000  # an arbitrary fixed epoch: the engine never reads the clock


def payment(txn: int, card: str, amount: str, ts_ms: int, country: str = "US") -> Payment:
    return factories.payment(card, f"t{txn:04d}", amount, ts_ms, country=country)


@dataclass
class Run:
    alerts: list[Alert]
    accepted: list[Payment]
    late: list[Payment]


def run_engine(
    arrivals: Sequence[Payment],
    rules: Sequence[Rule] = (SEED_RULE,),
    roundtrip: bool = False,
    bound: int = MAX_KEY_EVENTS,
) -> Run:
    """The payments decided in ``arrivals`` order, each on its key of the rules' group-by
    (they all share one)."""
    states: dict[str, KeyState] = {}
    run = Run([], [], [])
    for p in arrivals:
        key = rules[0].group_key(p)
        state = states.get(key) or KeyState()
        if roundtrip:  # what the RocksDB table and its changelog do between events
            state = KeyState.from_bytes(json.dumps(state.to_json()).encode())
        verdict = evaluate(state, p, key, rules, LATENESS_MS, 0, 0, bound)
        assert_derived_state_matches_the_pool(state, rules)
        assert sum(s.size() for s in state.rules.values()) <= bound
        states[key] = state
        (run.late if verdict.late else run.accepted).append(p)
        run.alerts.extend(verdict.alerts)
    return run


def shuffle_within_lateness(events: Sequence[Payment], seed: int) -> list[Payment]:
    """An arrival order in which no event is late: sort by ts + jitter in [0, lateness]."""
    rng = random.Random(seed)
    return sorted(events, key=lambda p: p.ts_ms + rng.randint(0, LATENESS_MS))


def with_redeliveries(arrivals: Sequence[Payment], seed: int) -> list[Payment]:
    """``arrivals`` with about a third of them followed by a redelivery of a payment already
    seen that is still within the lateness."""
    rng = random.Random(seed)
    with_duplicates: list[Payment] = []
    for p in arrivals:
        with_duplicates.append(p)
        if rng.random() < 0.3:
            seen = [q for q in with_duplicates if q.ts_ms >= p.ts_ms - LATENESS_MS // 2]
            with_duplicates.append(rng.choice(seen))
    return with_duplicates


def assert_derived_state_matches_the_pool(state: KeyState, rules: Sequence[Rule]) -> None:
    """What the engine keeps beside the stored state (ids, running aggregates) is always
    what it would compute from the pool afresh."""
    by_id = {rule.rule_id: rule for rule in rules}
    for rule_id, rule_state in state.rules.items():
        pool = rule_state.pool
        assert pool == sorted(pool)
        if rule_state.pooled is not None:
            assert rule_state.pooled == {e[1]: e[5] for e in pool}
        if isinstance(rule_state, HistoryState) and rule_state.pooled_totals is not None:
            amounts = [Decimal(e[2]) for e in pool]
            assert rule_state.pooled_totals == (len(amounts), sum(amounts, Decimal(0)))
        rule = by_id[rule_id]
        if not isinstance(rule, AggregateRule):
            continue
        aggregate = rule.aggregate
        if rule_state.whole is not None:
            assert rule_state.whole.value() == aggregate.value(pool)
        if rule_state.window is not None:
            assert rule_state.window.value.value() == aggregate.value(pool[rule_state.window.lo :])

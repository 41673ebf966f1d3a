"""app.generator: the project's own payments are ones its validator accepts."""

from __future__ import annotations

import random
import re
from dataclasses import replace

import pytest

from app.detection.lists import listbook
from app.detection.models import ms_from_iso
from app.detection.pan import contains_pan
from app.detection.rules import KINDS, Rule
from app.detection.validation import parse_keyed_payment
from app.generator import (
    BINS,
    BLOCKED_DEVICES,
    GENUINE,
    PATTERNS,
    PaymentGenerator,
    card_token,
    ring_entries,
)
from app.history.backtest import Replay
from app.rules_admin.topic import load_rule_file
from tests.docs import REPO

NOW_MS = 1_795_000_000_000
LATENESS_MS = 60_000


def test_200_000_card_tokens_are_none_of_them_card_numbers() -> None:
    rng = random.Random(1)
    tokens = [card_token(rng) for _ in range(200_000)]
    assert not any(map(contains_pan, tokens))
    # Why: no token has more than 8 decimal digits in a row, a card number needs 13.
    assert max(len(run) for t in tokens for run in re.findall(r"\d+", t)) <= 8
    assert len(set(tokens)) == len(tokens)
    # The old shape, 16 random hex digits, held card numbers (the tok_7567...).
    old_shape = ["tok_" + f"{rng.getrandbits(64):016x}" for _ in range(200_000)]
    assert sum(map(contains_pan, old_shape)) > 0


def test_generated_payments_are_all_accepted_keyed_as_the_generator_keys_them() -> None:
    # Seed 4000: "txn-4000-000000123" read as 13 Visa digits, one txn id in ten refused.
    generator = PaymentGenerator(seed=4000, cards=2_000, fraud_ratio=0.02)
    for payment, _ in generator.stream(20_000, NOW_MS):
        parsed, rekeyed = parse_keyed_payment(
            payment.card_id.encode(), payment.to_json(), payment.ts_ms
        )
        assert parsed == payment and not rekeyed


def test_a_seed_that_reads_as_a_card_number_is_refused() -> None:
    # It is in every txn id: every payment would be refused.
    with pytest.raises(ValueError, match="card number"):
        PaymentGenerator(seed=4111111111111111, cards=1)


def kinds_and_default_rules() -> dict[str, Rule]:
    files = (
        "examples/rules/kinds.yaml",
        "examples/rules/lists.yaml",
        "app/rules_admin/default_rules.yaml",
    )
    return {r.rule_id: r for path in files for r in load_rule_file(REPO / path)}


def test_every_kind_of_the_shipped_rules_has_a_pattern_named_after_its_rule() -> None:
    """``make demo`` shows each kind firing: the shipped rules of every kind are the names
    of injected patterns (``burst`` is the default rules' high-value-burst)."""
    rules = kinds_and_default_rules()
    named = {"high-value-burst", *PATTERNS, *GENUINE}
    assert named <= set(rules)
    assert {rules[name].kind for name in named} == set(KINDS)
    assert {rules[name].kind for name in GENUINE} == {"absence"}


def test_injected_patterns_are_caught_by_the_rules_of_their_name() -> None:
    """Each pattern's truth names the example rule that catches it: every injected fraud
    has a payment in an alert of that rule (the rule's completeness), each genuine
    counterpart none (a large payment confirmed in time raises no absence), and the stream
    stays in event-time order with the pattern's later payments minutes on. The rules run
    as a worker runs them (``Replay``: an absence waits for the stream's event time to pass
    its deadline and the lateness)."""
    rules = kinds_and_default_rules()
    generator = PaymentGenerator(seed=8, cards=500, fraud_ratio=0.0, pattern_ratio=0.002)
    # 100 minutes of event time: many times the absence rule's 30.
    items = list(generator.stream(20_000, NOW_MS, step_ms=300))
    payments = [p for p, _ in items]
    assert [p.ts_ms for p in payments] == sorted(p.ts_ms for p in payments)
    produced = {p.txn_id for p in payments}
    end_ms = payments[-1].ts_ms
    # A pattern started near the end may have its later payments cut off by the count, or
    # its deadline (an absence) and the lateness not passed yet.
    truths = [
        t
        for _, t in items
        if t is not None
        and produced.issuperset(t.txn_ids)
        and ms_from_iso(t.last_ts) + LATENESS_MS < end_ms  # type: ignore[operator]
    ]
    frauds = [t for t in truths if t.fraud]
    genuine = [t for t in truths if not t.fraud]
    assert {t.pattern for t in frauds} == set(PATTERNS) and len(frauds) > 100
    assert {t.pattern for t in genuine} == set(GENUINE) and len(genuine) > 10
    for p in payments:
        # What a worker receives: the event as the generator sends it, keyed as it keys it.
        parsed, _ = parse_keyed_payment((p.card_id or p.account_id).encode(), p.to_json(), p.ts_ms)
        assert parsed == p
    alerted: dict[str, list[set[str]]] = {}
    # What the demo publishes before the payments: the ring's devices on the list.
    listbook.install(BLOCKED_DEVICES, tuple(ring_entries(NOW_MS)))
    try:
        for name in PATTERNS:
            replay = Replay(replace(rules[name], status="active"), LATENESS_MS)
            alerts = list(replay.alerts((p.ts_ms, p) for p in payments))
            alerted[name] = [set(a.txn_ids) for a in alerts]
            assert replay.late == 0
    finally:
        listbook.install(BLOCKED_DEVICES, ())
    for truth in frauds:
        assert any(a & set(truth.txn_ids) for a in alerted[truth.pattern]), truth
    for truth in genuine:
        assert not any(a & set(truth.txn_ids) for a in alerted[truth.pattern]), truth


def test_no_patterns_leave_the_stream_as_it_was() -> None:
    plain = PaymentGenerator(seed=3, cards=100).stream(2_000, NOW_MS)
    zero = PaymentGenerator(seed=3, cards=100, pattern_ratio=0.0).stream(2_000, NOW_MS)
    assert list(plain) == list(zero)


def test_generated_payments_carry_their_card_bin_which_rules_can_read() -> None:
    generator = PaymentGenerator(seed=4, cards=50)
    payments = [p for _ in range(40) for p in generator.payments(NOW_MS)[0]]
    assert {len(p.bin) for p in payments} == {6, 8}
    for p in payments:
        parsed, _ = parse_keyed_payment(p.card_id.encode(), p.to_json(), p.ts_ms)
        assert parsed.bin == p.bin and parsed.bin in BINS

"""app.generator: the project's own payments are ones its validator accepts."""

from __future__ import annotations

import random
import re

import pytest

from app.detection.engine import KeyState, evaluate
from app.detection.pan import contains_pan
from app.detection.rules import Rule
from app.detection.validation import parse_keyed_payment
from app.generator import BINS, PATTERNS, PaymentGenerator, card_token
from app.rules_admin.topic import load_rule_file
from tests.docs import REPO

NOW_MS = 1_795_000_000_000


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


def test_injected_patterns_are_caught_by_the_rules_of_their_name() -> None:
    """Each pattern's truth names the example rule that catches it: every injected pattern
    has a payment in an alert of that rule (the rule's completeness), and the stream stays
    in event-time order with the pattern's later payments minutes on."""
    rules: dict[str, Rule] = {
        r.rule_id: r for r in load_rule_file(REPO / "examples/rules/kinds.yaml")
    }
    generator = PaymentGenerator(seed=8, cards=500, fraud_ratio=0.0, pattern_ratio=0.002)
    items = list(generator.stream(30_000, NOW_MS, step_ms=50))
    payments = [p for p, _ in items]
    assert [p.ts_ms for p in payments] == sorted(p.ts_ms for p in payments)
    produced = {p.txn_id for p in payments}
    # A pattern started near the end may have its later payments cut off by the count.
    truths = [t for _, t in items if t is not None and produced.issuperset(t.txn_ids)]
    assert {t.pattern for t in truths} == set(PATTERNS) and len(truths) > 30
    states: dict[tuple[tuple[str, ...], str], KeyState] = {}
    alerted: dict[str, set[str]] = {name: set() for name in PATTERNS}
    groups: dict[tuple[str, ...], list[Rule]] = {}
    for rule in rules.values():
        groups.setdefault(rule.group_by, []).append(rule)
    for p in payments:
        # What a worker receives: the event as the generator sends it, keyed as it keys it.
        parsed, _ = parse_keyed_payment((p.card_id or p.account_id).encode(), p.to_json(), p.ts_ms)
        assert parsed == p
        for group_by, grouped in groups.items():
            if not any(r.qualifies(p) for r in grouped):
                continue
            key = grouped[0].group_key(p)
            state = states.setdefault((group_by, key), KeyState())
            for alert in evaluate(state, p, key, grouped, 60_000, 0, 0).alerts:
                alerted.setdefault(alert.rule_id, set()).update(alert.txn_ids)
    for truth in truths:
        assert alerted[truth.pattern] & set(truth.txn_ids), truth


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

"""app.generator: the project's own payments are ones its validator accepts."""

from __future__ import annotations

import random
import re

import pytest

from app.detection.pan import contains_pan
from app.detection.validation import parse_keyed_payment
from app.generator import PaymentGenerator, card_token

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

"""app.delivery.backoff: exponential backoff with full jitter, capped."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.delivery.backoff import backoff_delay


def test_backoff_ceiling_doubles_up_to_the_cap() -> None:
    top = [backoff_delay(n, base=0.05, cap=10.0, rand=lambda: 1.0) for n in range(1, 12)]
    assert top[:4] == pytest.approx([0.05, 0.1, 0.2, 0.4])
    assert top[-1] == 10.0 and max(top) == 10.0
    assert all(a <= b for a, b in itertools.pairwise(top))
    assert backoff_delay(0) == 0.0
    assert backoff_delay(10_000, cap=10.0, rand=lambda: 1.0) == 10.0  # no overflow


@given(st.integers(min_value=1, max_value=200))
def test_backoff_is_full_jitter_within_bounds(attempt: int) -> None:
    delay = backoff_delay(attempt, base=0.05, cap=10.0)
    assert 0.0 <= delay <= min(10.0, 0.05 * 2 ** (attempt - 1))


def test_backoff_is_jittered() -> None:
    draws = {backoff_delay(8) for _ in range(50)}
    assert len(draws) > 40  # full jitter: spread over [0, ceiling], not a fixed step
    assert min(draws) < 3.2 / 2 < max(draws)

"""agents.batch._DecodedStates: a busy key's decoded state is reused between batches only
while the store holds exactly what it was written as, and never after a failed batch."""

from __future__ import annotations

from agents.batch import _DecodedStates
from app.detection.engine import KeyState

WHERE = ("card-state", "tok_busy")
BIG = b"x" * _DecodedStates.MIN_BYTES


def test_a_state_comes_back_for_the_bytes_it_was_written_as() -> None:
    states, state = _DecodedStates(), KeyState(newest_ts=1)
    states.put(WHERE, BIG, state)
    assert states.take(WHERE, BIG) is state


def test_other_bytes_in_the_store_are_a_miss() -> None:
    # A restore, or the other agent, wrote the key since.
    states = _DecodedStates()
    states.put(WHERE, BIG, KeyState(newest_ts=1))
    assert states.take(WHERE, BIG + b" ") is None


def test_a_state_taken_by_a_batch_that_then_fails_is_gone() -> None:
    # The batch mutated it and wrote nothing: the next batch must decode the store again.
    states, state = _DecodedStates(), KeyState(newest_ts=1)
    states.put(WHERE, BIG, state)
    taken = states.take(WHERE, BIG)
    assert taken is state
    assert states.take(WHERE, BIG) is None


def test_small_values_are_not_kept_and_the_total_is_bounded() -> None:
    states = _DecodedStates()
    states.put(WHERE, b"{}", KeyState())
    assert states.take(WHERE, b"{}") is None
    count = _DecodedStates.MAX_BYTES // len(BIG) + 5
    for index in range(count):
        states.put(("card-state", f"k{index}"), BIG, KeyState())
    assert states.take(("card-state", "k0"), BIG) is None, "the oldest went first"
    assert states.take(("card-state", f"k{count - 1}"), BIG) is not None

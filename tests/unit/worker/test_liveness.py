"""app.worker.liveness: a pause of the process is noticed, by the timer or by the first
code that runs after it, and stays noticed until the group confirms the worker."""

from __future__ import annotations

from app.worker.liveness import Liveness


def test_ticks_half_a_second_apart_are_no_pause() -> None:
    now = [100.0]
    watch = Liveness(clock=lambda: now[0])
    for _ in range(10):
        now[0] += 0.5
        watch.tick()
    assert not watch.paused()


def test_a_pause_is_seen_by_the_first_caller_before_the_timer_runs() -> None:
    now = [100.0]
    watch = Liveness(clock=lambda: now[0])
    now[0] += 10.0  # SIGSTOP for 10 s; the batch's code runs before the timer
    assert watch.paused()
    now[0] += 0.1
    assert watch.paused(), "still suspect: nothing has confirmed the worker yet"
    watch.confirmed()
    assert not watch.paused()


def test_a_pause_seen_by_the_timer_holds_for_later_batches() -> None:
    now = [100.0]
    watch = Liveness(clock=lambda: now[0])
    now[0] += 7.0
    watch.tick()  # the timer ran first after the pause
    now[0] += 0.2
    assert watch.paused(), "a batch fetched after the pause must still ask the group"

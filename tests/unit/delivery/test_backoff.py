"""app.delivery.backoff: exponential backoff with full jitter, capped, and the one retry loop
(Retry) on it: jittered waits, forever unless stopped, never on cancellation, one log line a
retry."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.delivery.backoff import Retry, backoff_delay


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


# --------------------------------------------------------------------------- the loop


class Flaky:
    """An operation that raises ``errors`` one call each, then returns ``"done"``."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors, self.calls = list(errors), 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def recorder(sleeps: list[float]) -> Callable[[float], Awaitable[None]]:
    async def sleep(delay: float) -> None:
        sleeps.append(delay)

    return sleep


def test_retry_waits_full_jitter_delays_that_double_up_to_the_cap() -> None:
    sleeps: list[float] = []
    top = Retry("x", base=0.5, cap=5.0, sleep=recorder(sleeps), rand=lambda: 1.0)
    assert asyncio.run(top.run(Flaky(*[OSError()] * 6))) == "done"
    assert sleeps == pytest.approx([0.5, 1.0, 2.0, 4.0, 5.0, 5.0])
    sleeps.clear()
    jittered = Retry("x", base=0.5, cap=5.0, sleep=recorder(sleeps))
    asyncio.run(jittered.run(Flaky(*[OSError()] * 40)))
    ceilings = [min(5.0, 0.5 * 2**n) for n in range(40)]
    assert all(0.0 <= s <= c for s, c in zip(sleeps, ceilings, strict=True))
    assert len(set(sleeps)) > 30  # drawn, not a fixed step


def test_retry_never_gives_up_unless_told() -> None:
    sleeps: list[float] = []
    operation = Flaky(*[ConnectionError()] * 500)
    retry = Retry("x", base=0.05, cap=10.0, sleep=recorder(sleeps))
    assert asyncio.run(retry.run(operation)) == "done"
    assert operation.calls == 501 and len(sleeps) == 500
    assert retry.failures == 0 and retry.failing_since is None  # a success ends the streak


def test_retry_gives_up_with_the_last_failure_once_its_stop_event_is_set() -> None:
    async def main() -> tuple[Flaky, int]:
        stop = asyncio.Event()
        seen: list[Exception] = []

        def on_failure(exc: Exception) -> None:
            seen.append(exc)
            if len(seen) == 3:
                stop.set()

        operation = Flaky(OSError("1"), OSError("2"), OSError("3"), OSError("4"))
        retry = Retry("x", base=0.001, cap=0.001, on_failure=on_failure, stop=stop)
        with pytest.raises(OSError, match="3"):
            await retry.run(operation)
        return operation, len(seen)

    operation, failures = asyncio.run(main())
    assert operation.calls == 3 and failures == 3


def test_a_stop_event_ends_the_wait_at_once() -> None:
    async def main() -> float:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, stop.set)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await Retry("x", base=60.0, cap=60.0, stop=stop, rand=lambda: 1.0).run(
                Flaky(TimeoutError(), TimeoutError())
            )
        return time.monotonic() - started

    assert asyncio.run(main()) < 5.0


def test_cancellation_is_never_retried_nor_waited_out() -> None:
    sleeps: list[float] = []
    retry = Retry("x", base=0.05, cap=10.0, sleep=recorder(sleeps))
    operation = Flaky(asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(retry.run(operation))
    assert operation.calls == 1 and sleeps == []

    async def cancelled_mid_wait() -> int:
        operation = Flaky(*[OSError()] * 3)
        task = asyncio.create_task(Retry("x", base=60.0, cap=60.0, rand=lambda: 1.0).run(operation))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return operation.calls

    assert asyncio.run(cancelled_mid_wait()) == 1


def test_each_retry_is_logged_with_counts_and_the_class_never_the_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("tests.retry")
    retry = Retry(
        "cannot read topic metadata",
        base=0.5,
        cap=5.0,
        log=log,
        sleep=recorder([]),
        rand=lambda: 1.0,
    )
    secret = ConnectionError("password=hunter2 for card 4111111111111111")
    with caplog.at_level(logging.WARNING, logger="tests.retry"):
        asyncio.run(retry.run(Flaky(secret, OSError())))
    assert [r.getMessage() for r in caplog.records] == [
        "cannot read topic metadata (failure 1 in a row, failing for 0.0 s: ConnectionError);"
        " retrying in 0.50 s",
        "cannot read topic metadata (failure 2 in a row, failing for 0.0 s: OSError);"
        " retrying in 1.00 s",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_a_traceback_is_logged_only_when_asked_and_redacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("tests.retry")
    retry = Retry(
        "rules follower failed",
        base=0.5,
        cap=5.0,
        log=log,
        level=logging.ERROR,
        traceback=True,
        sleep=recorder([]),
    )
    with caplog.at_level(logging.ERROR, logger="tests.retry"):
        asyncio.run(retry.run(Flaky(ValueError("card 4111111111111111"))))
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and "Traceback" in record.getMessage()
    assert "4111111111111111" not in caplog.text and "************1111" in caplog.text


def test_progress_starts_a_new_streak_with_a_short_first_wait() -> None:
    sleeps: list[float] = []
    retry = Retry("x", base=0.5, cap=5.0, sleep=recorder(sleeps), rand=lambda: 1.0)
    calls = 0

    async def follower() -> None:
        # Fails four times, then runs for a while (progress) and fails again.
        nonlocal calls
        calls += 1
        if calls == 5:
            retry.recovered()
        if calls <= 5:
            raise ConnectionError

    asyncio.run(retry.run(follower))
    assert sleeps == pytest.approx([0.5, 1.0, 2.0, 4.0, 0.5])

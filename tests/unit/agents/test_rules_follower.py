"""agents.rules: the follower is retried forever, loudly, and an outage after progress is a new
streak (a fake follow(); no broker)."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import pytest

from agents import rules
from app.worker.stats import WorkerStats


def test_the_follower_keeps_retrying_loudly_and_progress_starts_a_new_streak(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fresh = WorkerStats()
    failing: list[bool] = []
    script = ["fail", "fail", "connect-and-fail", "fail", "stop"]

    async def fake_follow(_bootstrap: str, _topic: str, _book: Any, on_change: Any) -> None:
        step = script.pop(0)
        failing.append(fresh.rules_follower_failing_since is not None)
        if step == "stop":
            raise asyncio.CancelledError
        if step == "connect-and-fail":
            await on_change("connected")
            failing.append(fresh.rules_follower_failing_since is not None)
        raise ConnectionError("broker down")

    async def no_sleep(_delay: float) -> None:
        pass

    monkeypatch.setattr(rules, "follow", fake_follow)
    monkeypatch.setattr(rules, "stats", fresh)
    monkeypatch.setattr(asyncio, "sleep", no_sleep)
    monkeypatch.setattr(rules.follower_retry, "failures", 0)
    monkeypatch.setattr(rules.follower_retry, "failing_since", None)
    with (
        caplog.at_level(logging.ERROR, logger="agents.rules"),
        pytest.raises(asyncio.CancelledError),
    ):
        asyncio.run(rules.follow_rules())
    streaks = [
        int(m.group(1))
        for r in caplog.records
        if (m := re.search(r"^rules follower failed.*\(failure (\d+) in a row", r.getMessage()))
    ]
    assert streaks == [1, 2, 1, 2]
    assert all(r.levelno == logging.ERROR and "Traceback" in r.getMessage() for r in caplog.records)
    # Failing from the first failure on; connecting clears it until the next failure.
    assert failing == [False, True, True, False, True, True]
    assert fresh.rules_follower_failing_since is not None

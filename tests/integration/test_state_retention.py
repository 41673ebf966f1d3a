"""The state changelogs keep a key as long as FRAUD_STATE_RETENTION says, or the worker
refuses to start (app.worker.partition_check)."""

from __future__ import annotations

import time

import pytest

from app.worker.partition_check import topic_retentions
from tests.integration.harness import Pipeline, run

SIXTY_ONE_DAYS_S = 61 * 24 * 3600


def test_a_raised_retention_on_changelogs_created_shorter_stops_the_worker(
    pipeline: Pipeline,
) -> None:
    first = pipeline.worker().start()  # creates the changelogs with the default retention
    first.stop()
    changelog = f"fraud-{pipeline.uid}-card-state-changelog"
    found = run(topic_retentions(pipeline.stack.bootstrap, [changelog]))
    assert found[changelog] == ("compact,delete", (8 * 24 * 3600 + 60) * 1000)

    pipeline.extra_env["FRAUD_STATE_RETENTION"] = str(SIXTY_ONE_DAYS_S)
    second = pipeline.worker()
    with pytest.raises(AssertionError, match="exited"):
        second.start(ready_timeout=60)
    assert second.process is not None
    deadline = time.monotonic() + 30
    while second.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert second.process.returncode == 2
    # The first state changelog by name: card-alerts, card-state, group-state.
    alerts_changelog = f"fraud-{pipeline.uid}-card-alerts-changelog"
    assert (
        f"refusing to start: changelog {alerts_changelog!r} has retention.ms=691260000 but"
        f" FRAUD_STATE_RETENTION needs {SIXTY_ONE_DAYS_S * 1000}" in second.log_text()
    )

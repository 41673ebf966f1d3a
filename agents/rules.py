"""Every worker follows the whole rules topic itself: rules as broadcast state.

Faust's GlobalTable does not keep several workers in sync (faust-streaming issue
283), so each worker runs its own group-less consumer of the compacted topic.
Applying a record never raises (``RuleBook.apply``), so no record can stop the
follower; a lost connection restarts it from the beginning of the topic, which
re-applies the same records to the same effect.
"""

from __future__ import annotations

import logging
import time

from app.delivery.backoff import Retry
from app.detection.rulebook import rulebook
from app.rules_admin.topic import bootstrap_servers, follow
from app.worker.faust_app import app, settings
from app.worker.stats import stats

log = logging.getLogger(__name__)


def _failing(_exc: Exception) -> None:
    if stats.rules_follower_failing_since is None:
        stats.rules_follower_failing_since = time.monotonic()


# The last good rules stay in force while we reconnect; say so loudly (ERROR, traceback).
follower_retry = Retry(
    "rules follower failed; the last good rules stay in force",
    base=0.5,
    cap=5.0,
    log=log,
    level=logging.ERROR,
    traceback=True,
    on_failure=_failing,
)


async def _following(outcome: str) -> None:
    # Progress (connected, or a record applied): the next failure is a new outage.
    stats.rules_follower_failing_since = None
    follower_retry.recovered()


async def _follow() -> None:
    await follow(bootstrap_servers(settings.broker), settings.topic_rules, rulebook, _following)


@app.task  # type: ignore[untyped-decorator]
async def follow_rules() -> None:
    while True:  # follow() returns only when told to stop (never, here): then follow again
        await follower_retry.run(_follow)

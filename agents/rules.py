"""Every worker follows the whole rules topic itself: rules as broadcast state.

Faust's GlobalTable does not keep several workers in sync (faust-streaming issue
283), so each worker runs its own group-less consumer of the compacted topic.
Applying a record never raises (``RuleBook.apply``), so no record can stop the
follower; a lost connection restarts it from the beginning of the topic, which
re-applies the same records to the same effect.
"""

from __future__ import annotations

import asyncio
import logging
import time

from app.delivery.backoff import backoff_delay
from app.detection.rulebook import rulebook
from app.rules_admin.topic import bootstrap_servers, follow
from app.worker.faust_app import app, settings
from app.worker.stats import stats

log = logging.getLogger(__name__)


async def _following(outcome: str) -> None:
    stats.rules_follower_failing_since = None


@app.task  # type: ignore[untyped-decorator]
async def follow_rules() -> None:
    attempt = 0
    while True:
        try:
            await follow(
                bootstrap_servers(settings.broker), settings.topic_rules, rulebook, _following
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            attempt += 1
            if stats.rules_follower_failing_since is None:
                stats.rules_follower_failing_since = time.monotonic()
            delay = backoff_delay(attempt, base=0.5, cap=5.0)
            # The last good rules stay in force while we reconnect; say so loudly.
            log.exception("rules follower failed; retrying in %.1f s", delay)
            await asyncio.sleep(delay)
        else:
            attempt = 0

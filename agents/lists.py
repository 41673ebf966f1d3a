"""Every worker follows the whole lists and suppressions topics itself, as it does the rules
(``agents.rules``): one group-less consumer of both, folded into the engine's ``listbook``.

Applying a record never raises (``ListBook.apply``), so no record can stop the follower; a
lost connection reads both topics again from the beginning, which re-applies the same
records to the same effect while the entries in force stay in force.
"""

from __future__ import annotations

import logging

from app.delivery.backoff import Retry
from app.detection.lists import LIST, SUPPRESSION, listbook
from app.lists.topic import follow
from app.rules_admin.topic import bootstrap_servers
from app.worker.faust_app import app, settings

log = logging.getLogger(__name__)

listbook.max_entries = settings.max_list_entries
listbook.forget_after_ms = int(settings.max_event_age_s * 1000)
TOPICS = {settings.topic_lists: LIST, settings.topic_suppressions: SUPPRESSION}

follower_retry = Retry(
    "lists follower failed; the last good lists and suppressions stay in force",
    base=0.5,
    cap=5.0,
    log=log,
    level=logging.ERROR,
    traceback=True,
)


async def _following(outcome: str) -> None:
    follower_retry.recovered()


async def _follow() -> None:
    await follow(bootstrap_servers(settings.broker), TOPICS, listbook, _following)


@app.task  # type: ignore[untyped-decorator]
async def follow_lists() -> None:
    while True:  # follow() returns to look again for a topic that did not exist
        await follower_retry.run(_follow)

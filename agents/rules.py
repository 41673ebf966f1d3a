"""Every worker follows the whole rules topic itself: rules as broadcast state.

Faust's GlobalTable does not keep several workers in sync (faust-streaming issue
283), so each worker runs its own group-less consumer of the compacted topic.
"""

from __future__ import annotations

import asyncio
import logging

from app.faust_app import app, settings
from app.rulebook import rulebook
from app.rules_io import bootstrap_servers, follow

log = logging.getLogger(__name__)


@app.task  # type: ignore[untyped-decorator]
async def follow_rules() -> None:
    while True:
        try:
            await follow(bootstrap_servers(settings.broker), settings.topic_rules, rulebook)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The last good rules stay in force while we reconnect; say so loudly.
            log.exception("rules follower failed; retrying in 2 s")
            await asyncio.sleep(2)

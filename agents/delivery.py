"""Getting records out: the one dead-letter path and the one retry policy for sends.

Every agent dead-letters through :func:`dead_letter` and retries Kafka sends through
:func:`send_acknowledged`, which backs off with full jitter (``app.delivery.backoff.Retry``,
the same policy the DynamoDB writer uses) and never gives up: a record whose output
Kafka refuses stays unacknowledged, so its offset is not committed and nothing is lost.

:func:`guarded` is what makes "no exception escapes an agent" hold: Faust restarts a
crashed agent *past* the record it was on and commits that offset, so an escaped
exception would be a silently lost record.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from app.delivery.backoff import Retry
from app.delivery.dead_letter import DeadLetter
from app.worker.failures import failures
from app.worker.faust_app import dlq_topic
from app.worker.stats import stats

log = logging.getLogger(__name__)

SEND_BACKOFF_BASE_S = 0.1
SEND_BACKOFF_CAP_S = 5.0


async def _send(topic: Any, key: bytes | None, value: bytes, what: str, *, wait: bool) -> Any:
    """Hand a record to the producer (and with ``wait`` await Kafka's acknowledgement),
    retrying with backoff until it goes through; returns the delivery future."""

    async def send() -> Any:
        delivery = await topic.send(key=key, value=value)
        if wait:
            await delivery
        return delivery

    taken = "acknowledged" if wait else "taken"
    retry = Retry(
        f"{what} not {taken} by Kafka", base=SEND_BACKOFF_BASE_S, cap=SEND_BACKOFF_CAP_S, log=log
    )
    return await retry.run(send)


async def send_acknowledged(topic: Any, key: bytes | None, value: bytes, what: str) -> None:
    """Send and wait for Kafka's acknowledgement, retrying with backoff until it comes."""
    await _send(topic, key, value, what, wait=True)


def _count_lost(what: str) -> Callable[[Any], None]:
    def check(future: Any) -> None:
        error = None if future.cancelled() else future.exception()
        if error is not None:
            # Lost: the source offset is committed anyway. /healthz fails for a while.
            failures.dlq_send_failed(what, error)

    return check


async def dead_letter(message: Any, reason: str, detail: str, *, wait: bool = False) -> None:
    """Send ``message`` to the DLQ with ``reason``; never raises (but for cancellation).

    Card numbers are masked in the record and its key (see ``DeadLetter``). By default
    the send is buffered, not awaited: Faust flushes the producer before it commits the
    source offset, and a flood of bad records must not cost a round trip each. With
    ``wait`` it returns only once Kafka has the record (the sink acks by hand).
    """
    record = DeadLetter.for_message(message, reason, detail)
    what = f"dead letter ({reason}) for {message.topic}[{message.partition}]@{message.offset}"
    stats.dlq[reason] += 1
    delivery = await _send(dlq_topic, record.original_key, record.to_json(), what, wait=wait)
    if not wait:
        # Faust returns its FutureMessage, an asyncio.Future.
        cast("asyncio.Future[Any]", delivery).add_done_callback(_count_lost(what))


async def guarded(agent: str, message: Any, handle: Awaitable[None]) -> None:
    """Run one record's handling; an unforeseen error dead-letters the record instead of
    escaping the agent (reason ``internal_error``, naming the exception's class)."""
    try:
        await handle
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        where = f"{message.topic}[{message.partition}]@{message.offset}"
        failures.internal_error(agent, exc, where)
        await dead_letter(message, "internal_error", f"{agent}: {type(exc).__name__}")

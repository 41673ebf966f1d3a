"""The cheaper delivery hand-off keeps Faust's semantics: deliver, unless the flow is suspended."""

from __future__ import annotations

import asyncio
from typing import Any

from app.transport import Consumer


def bare_consumer() -> Any:
    """Just the state ``wait_first`` reads: the three events of a running consumer."""
    consumer: Any = Consumer.__new__(Consumer)
    consumer.__dict__.update(
        suspend_flow=asyncio.Event(), _stopped=asyncio.Event(), _crashed=asyncio.Event()
    )
    return consumer


def test_delivery_completes_and_later_deliveries_reuse_the_watchers() -> None:
    async def scenario() -> None:
        consumer = bare_consumer()
        delivered: list[int] = []

        async def deliver(n: int) -> int:
            delivered.append(n)
            return n

        for n in range(3):
            result = await consumer.wait_first(deliver(n), consumer.suspend_flow.wait())
            assert (result.results, result.stopped) == ([n], False)
        assert delivered == [0, 1, 2]
        assert len(consumer._watchers) == 3  # one per event, shared by every message
        for watcher in consumer._watchers.values():
            watcher.cancel()

    asyncio.run(scenario())


def test_suspension_abandons_a_blocked_delivery_and_resume_rearms() -> None:
    async def scenario() -> None:
        consumer = bare_consumer()
        buffer_has_room = asyncio.Event()
        delivered: list[str] = []

        async def blocked_delivery() -> None:
            await buffer_has_room.wait()
            delivered.append("late")

        waiting = asyncio.ensure_future(
            consumer.wait_first(blocked_delivery(), consumer.suspend_flow.wait())
        )
        await asyncio.sleep(0.01)
        consumer.suspend_flow.set()  # a rebalance starts
        result = await asyncio.wait_for(waiting, 1)
        assert result.stopped is True
        buffer_has_room.set()
        await asyncio.sleep(0.01)
        assert delivered == [], "the abandoned delivery was cancelled"

        # While suspended nothing is delivered; after resume delivery works again.
        async def deliver() -> str:
            await asyncio.sleep(0.01)  # a delivery that has to wait a little (a busy buffer)
            delivered.append("after")
            return "ok"

        suspended = await consumer.wait_first(deliver(), consumer.suspend_flow.wait())
        assert suspended.stopped is True and delivered == []
        consumer.suspend_flow.clear()
        resumed = await consumer.wait_first(deliver(), consumer.suspend_flow.wait())
        assert (resumed.results, resumed.stopped, delivered) == (["ok"], False, ["after"])
        for watcher in consumer._watchers.values():
            watcher.cancel()

    asyncio.run(scenario())

"""The detection agent: decode, evaluate every card-keyed rule, update state, emit.

``payments.raw`` is keyed by card, so card rules need no repartition. Payments
that qualify for a rule grouped by another field (account, device, ip, ...)
are forwarded, keyed by that group, to a repartition topic (agents.grouped).
A payment whose Kafka key is not its card id (null, a txn id, anything) sits in
a partition that does not hold its card's state: it is forwarded through the
same repartition topic to its card's partition and evaluated there, never
dropped. A well-keyed payment pays one bytes comparison for that.

No exception escapes the agent (``agents.delivery.guarded``): a record that cannot
be handled goes to the DLQ as ``internal_error`` and the agent carries on. What it
shares with the grouped agent is in ``agents.decisions``.
"""

from __future__ import annotations

import time
from typing import Any

from agents.decisions import LIMITS, decide_for_card, forward_to_groups, rekey_by_card
from agents.delivery import dead_letter, guarded
from app.detection.rulebook import rulebook
from app.detection.validation import InvalidPayment, parse_payment
from app.worker.faust_app import app, payments_topic


async def handle_payment(message: Any) -> None:
    now_ms = time.time() * 1000
    try:
        payment = parse_payment(message.value, int(now_ms), LIMITS)
    except InvalidPayment as exc:
        await dead_letter(message, exc.reason, exc.detail)
        return
    await forward_to_groups(message, payment)
    if message.key == payment.card_id.encode():
        await decide_for_card(message, payment, now_ms)
    else:
        await rekey_by_card(message, payment)


@app.agent(payments_topic, name="detect")
async def detect(stream: Any) -> None:
    # Evaluating before the rules topic has been read would miss alerts.
    await rulebook.loaded.wait()
    async for event in stream.events():
        await guarded("detect", event.message, handle_payment(event.message))

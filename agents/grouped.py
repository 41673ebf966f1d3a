"""The repartition topic's consumer: rules grouped by something other than the card
(account, device, ip, or several), and payments re-keyed by card.

The detect agent forwards each payment that qualifies for such a rule to the
repartition topic, keyed by group-by name and key, so each key's payments meet
in one partition and one table. It also forwards, keyed by card and sent to the
card's partition, a payment whose Kafka key was not its card id; those are
evaluated here exactly as the detect agent would have. Forwarded payments were
validated already.
"""

from __future__ import annotations

import time
from typing import Any

from agents.decisions import LIMITS, apply_rules, decide_for_card
from agents.delivery import dead_letter, guarded
from app.detection.keys import split_group_record_key
from app.detection.rulebook import CARD_GROUP, rulebook
from app.detection.validation import InvalidPayment, parse_payment
from app.worker.faust_app import app, regroup_topic
from app.worker.stats import stats
from tables import group_state


async def handle_forwarded(message: Any) -> None:
    now_ms = time.time() * 1000
    try:
        group_by, key = split_group_record_key(message.key or b"")
    except ValueError:
        await dead_letter(message, "bad_group_key", "repartition record without a group key")
        return
    rules = rulebook.rules_for(group_by)
    if not rules and group_by != CARD_GROUP:
        return  # every rule of this group was deleted since the payment was forwarded
    try:
        payment = parse_payment(message.value, int(now_ms), LIMITS)
    except InvalidPayment as exc:
        # Validated before forwarding; only the wall-clock age bound can have moved.
        await dead_letter(message, exc.reason, exc.detail)
        return
    if group_by == CARD_GROUP:
        await decide_for_card(message, payment, now_ms)
        return
    record_key = message.key.decode()
    await apply_rules(message, payment, key, rules, group_state, now_ms, table_key=record_key)
    stats.grouped_processed += 1


@app.agent(regroup_topic, name="detect-grouped")
async def detect_grouped(stream: Any) -> None:
    await rulebook.loaded.wait()
    async for event in stream.events():
        await guarded("detect-grouped", event.message, handle_forwarded(event.message))

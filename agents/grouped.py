"""Rules grouped by something other than the card (account, device, ip, or several).

The detect agent forwards each payment that qualifies for such a rule to the
repartition topic, keyed by group-by name and key, so each key's payments meet
in one partition and one table. Forwarded payments were validated already.
"""

from __future__ import annotations

import time
from typing import Any

from agents.payments import LIMITS, apply_rules, dead_letter
from app.faust_app import app, regroup_topic
from app.rulebook import rulebook
from app.stats import stats
from app.validation import InvalidPayment, parse_payment
from tables import group_state


@app.agent(regroup_topic, name="detect-grouped")
async def detect_grouped(stream: Any) -> None:
    await rulebook.loaded.wait()
    async for event in stream.events():
        message = event.message
        now_ms = time.time() * 1000
        record_key = message.key.decode()
        group_name, _, key = record_key.partition("\x1f")
        rules = rulebook.rules_for(tuple(group_name.split("+")))
        if not rules:
            continue  # every rule of this group was deleted since the payment was forwarded
        try:
            payment = parse_payment(message.value, int(now_ms), LIMITS)
        except InvalidPayment as exc:
            # Validated before forwarding; only the wall-clock age bound can have moved.
            await dead_letter(message, exc.reason, exc.detail)
            continue
        await apply_rules(message, payment, key, rules, group_state, now_ms, table_key=record_key)
        stats.grouped_processed += 1

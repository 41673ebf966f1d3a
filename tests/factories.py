"""Shared test data: a valid payment with any field overridden.

``payment(card_id="tok_1", txn_id="t1", amount="1500", ts_ms=...)``: every other field
gets a plausible constant, and ``ts`` always agrees with ``ts_ms``.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from app.detection.models import Payment, iso_from_ms


def payment(
    card_id: str = "tok_1",
    txn_id: str = "t1",
    amount: str | Decimal = "1500",
    ts_ms: int | None = None,
    **fields: Any,
) -> Payment:
    ts = int(time.time() * 1000) if ts_ms is None else ts_ms
    body: dict[str, Any] = {
        "account_id": f"acct-{card_id}",
        "currency": "USD",
        "merchant_id": "m1",
        "mcc": "5411",
        "country": "US",
        "device_id": f"dev-{card_id}",
        "ip": "203.0.113.7",
        **fields,
    }
    return Payment(
        txn_id=txn_id,
        card_id=card_id,
        amount=Decimal(amount),
        ts=iso_from_ms(ts),
        ts_ms=ts,
        **body,
    )

"""What a rule counts over its window: one small type per aggregate.

Each is monotone (adding an event never lowers it), which the engine's invariant needs.
They read the engine's pool entries ``(ts_ms, txn_id, amount, country, distinct value)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar

from app.detection.models import Payment

Entry = tuple[int, str, str, str, str]  # (ts_ms, txn_id, amount, country, distinct value)

_TEXT = re.compile(r"^(count|sum\(amount\)|distinct_count\((\w+)\))$")


@dataclass(frozen=True, slots=True)
class Count:
    """How many qualifying events."""

    name: ClassVar[str] = "count"
    whole: ClassVar[bool] = True  # its threshold is a whole number
    one_per_event: ClassVar[bool] = True  # grows by exactly one per event

    @property
    def text(self) -> str:
        return "count"

    def entry_value(self, payment: Payment) -> str:
        return ""

    def value(self, entries: Iterable[Entry]) -> Decimal:
        return Decimal(sum(1 for _ in entries))


@dataclass(frozen=True, slots=True)
class SumOfAmounts:
    """The exact sum of the qualifying events' amounts."""

    name: ClassVar[str] = "sum"
    whole: ClassVar[bool] = False
    one_per_event: ClassVar[bool] = False

    @property
    def text(self) -> str:
        return "sum(amount)"

    def entry_value(self, payment: Payment) -> str:
        return ""

    def value(self, entries: Iterable[Entry]) -> Decimal:
        return sum((Decimal(e[2]) for e in entries), Decimal(0))


@dataclass(frozen=True, slots=True)
class DistinctCount:
    """How many distinct values of one payment field (e.g. cards per device)."""

    field: str
    name: ClassVar[str] = "distinct_count"
    whole: ClassVar[bool] = True
    one_per_event: ClassVar[bool] = False

    @property
    def text(self) -> str:
        return f"distinct_count({self.field})"

    def entry_value(self, payment: Payment) -> str:
        return str(payment.field(self.field))

    def value(self, entries: Iterable[Entry]) -> Decimal:
        return Decimal(len({e[4] for e in entries}))


Aggregate = Count | SumOfAmounts | DistinctCount


def parse_aggregate(text: object, fields: Iterable[str]) -> Aggregate:
    """``count``, ``sum(amount)`` or ``distinct_count(<field>)``; ValueError says why not."""
    match = _TEXT.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError("must be count, sum(amount) or distinct_count(<field>)")
    if match.group(2) is not None:
        if match.group(2) not in set(fields):
            raise ValueError(f"distinct_count field {match.group(2)!r} is not a payment field")
        return DistinctCount(match.group(2))
    return Count() if match.group(1) == "count" else SumOfAmounts()

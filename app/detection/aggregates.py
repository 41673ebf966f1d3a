"""What a rule counts over its window: one small type per aggregate.

Each is monotone (adding an event never lowers it), which the engine's invariant needs.
They read the engine's pool entries ``(ts_ms, txn_id, amount, country, distinct value,
fingerprint)``. Each also hands out a *window*: a running value over a run of entries
that takes an entry in or out in O(1), so the engine slides over a key's pool instead of
summing every candidate run afresh (a hot key's pool would make that quadratic).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar, Protocol

from app.detection.models import Payment

# (ts_ms, txn_id, amount, country, distinct value, fingerprint of the payment's content)
Entry = tuple[int, str, str, str, str, str]

_TEXT = re.compile(r"^(count|sum\(amount\)|distinct_count\((\w+)\))$")


class Window(Protocol):
    """The aggregate's value over a run of entries, updated one entry at a time."""

    def add(self, entry: Entry) -> None: ...

    def remove(self, entry: Entry) -> None: ...

    def value(self) -> Decimal: ...


class _CountWindow:
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def add(self, entry: Entry) -> None:
        self.n += 1

    def remove(self, entry: Entry) -> None:
        self.n -= 1

    def value(self) -> Decimal:
        return Decimal(self.n)


class _SumWindow:
    __slots__ = ("total",)

    def __init__(self) -> None:
        # Exact: amounts are bounded (validation), so Decimal's 28 digits never round.
        self.total = Decimal(0)

    def add(self, entry: Entry) -> None:
        self.total += Decimal(entry[2])

    def remove(self, entry: Entry) -> None:
        self.total -= Decimal(entry[2])

    def value(self) -> Decimal:
        return self.total


class _DistinctWindow:
    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, entry: Entry) -> None:
        self.counts[entry[4]] = self.counts.get(entry[4], 0) + 1

    def remove(self, entry: Entry) -> None:
        left = self.counts[entry[4]] - 1
        if left:
            self.counts[entry[4]] = left
        else:
            del self.counts[entry[4]]

    def value(self) -> Decimal:
        return Decimal(len(self.counts))


@dataclass(frozen=True, slots=True)
class Count:
    """How many qualifying events."""

    name: ClassVar[str] = "count"
    whole: ClassVar[bool] = True  # its threshold is a whole number

    @property
    def text(self) -> str:
        return "count"

    def entry_value(self, payment: Payment) -> str:
        return ""

    def value(self, entries: Iterable[Entry]) -> Decimal:
        return Decimal(sum(1 for _ in entries))

    def window(self) -> Window:
        return _CountWindow()


@dataclass(frozen=True, slots=True)
class SumOfAmounts:
    """The exact sum of the qualifying events' amounts."""

    name: ClassVar[str] = "sum"
    whole: ClassVar[bool] = False

    @property
    def text(self) -> str:
        return "sum(amount)"

    def entry_value(self, payment: Payment) -> str:
        return ""

    def value(self, entries: Iterable[Entry]) -> Decimal:
        return sum((Decimal(e[2]) for e in entries), Decimal(0))

    def window(self) -> Window:
        return _SumWindow()


@dataclass(frozen=True, slots=True)
class DistinctCount:
    """How many distinct values of one payment field (e.g. cards per device)."""

    field: str
    name: ClassVar[str] = "distinct_count"
    whole: ClassVar[bool] = True

    @property
    def text(self) -> str:
        return f"distinct_count({self.field})"

    def entry_value(self, payment: Payment) -> str:
        return str(payment.field(self.field))

    def value(self, entries: Iterable[Entry]) -> Decimal:
        return Decimal(len({e[4] for e in entries}))

    def window(self) -> Window:
        return _DistinctWindow()


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


# ------------------------------------------------ statistics of a key's earlier payments


@dataclass(frozen=True, slots=True)
class Statistic:
    """A statistic of the amounts of a key's earlier payments, as an exact fraction: a
    payment's amount is compared with ``factor`` times it without rounding."""

    text: ClassVar[str] = ""

    def of(self, count: int, total: Decimal, peak: Decimal) -> tuple[Decimal, int]:
        """(numerator, denominator) of the statistic of ``count`` amounts (at least one)
        summing to ``total``, the largest ``peak``: all a history rule keeps of them."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Average(Statistic):
    text: ClassVar[str] = "avg(amount)"

    def of(self, count: int, total: Decimal, peak: Decimal) -> tuple[Decimal, int]:
        return total, count


@dataclass(frozen=True, slots=True)
class Maximum(Statistic):
    text: ClassVar[str] = "max(amount)"

    def of(self, count: int, total: Decimal, peak: Decimal) -> tuple[Decimal, int]:
        return peak, 1


@dataclass(frozen=True, slots=True)
class Total(Statistic):
    text: ClassVar[str] = "sum(amount)"

    def of(self, count: int, total: Decimal, peak: Decimal) -> tuple[Decimal, int]:
        return total, 1


STATISTICS: dict[str, Statistic] = {s.text: s for s in (Average(), Maximum(), Total())}

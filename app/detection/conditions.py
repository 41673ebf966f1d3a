"""Conditions on a payment, as every kind of rule writes its filters.

A filter is a list of conditions a payment must all meet. A condition is one of:

* ``{field, op, value}``: a field of the payment against a constant;
* ``{field, op, ref}``: a field of the payment against another of its fields
  (``ref: merchant_id``);
* ``{any: [...]}``, ``{all: [...]}``, ``{not: {...}}``: groups, nested at most
  ``MAX_DEPTH`` deep, with at most ``MAX_CONDITIONS`` comparisons in one rule.

Each condition is compiled once into a closure (every payment meets every filter, so it is
not interpreted per payment), and writes itself back as the JSON it was parsed from, so a
rule round-trips through the rules topic unchanged. Anything that does not validate raises
:class:`RuleError` naming where, e.g. ``filter[1].any[0].ref``.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from app.detection.models import Payment

STRING_FIELDS = (
    "card_id",
    "account_id",
    "merchant_id",
    "device_id",
    "ip",
    "currency",
    "country",
    "mcc",
    "txn_id",
)
FILTER_FIELDS = (*STRING_FIELDS, "amount")
FILTER_OPS = ("==", "!=", "<", "<=", ">", ">=", "in", "not in")
# The groups, by their one key.
GROUP_KEYS = ("any", "all", "not")
# How deep groups nest, and how many comparisons one rule holds: a bound on what one
# payment costs a rule, whatever the rule says.
MAX_DEPTH = 8
MAX_CONDITIONS = 100


class RuleError(ValueError):
    """A rule failed validation; ``field`` names the offending field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


Test = Callable[[Payment], bool]
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}
# Each operator with a constant as a test factory: (field getter, rule value) -> payment
# test, one closure per condition.
_TESTS: dict[str, Callable[[Callable[[Payment], Any], Any], Test]] = {
    "in": lambda get, value: lambda payment: get(payment) in value,
    "not in": lambda get, value: lambda payment: get(payment) not in value,
    "==": lambda get, value: lambda payment: get(payment) == value,
    "!=": lambda get, value: lambda payment: get(payment) != value,
    ">=": lambda get, value: lambda payment: get(payment) >= value,
    ">": lambda get, value: lambda payment: get(payment) > value,
    "<=": lambda get, value: lambda payment: get(payment) <= value,
    "<": lambda get, value: lambda payment: get(payment) < value,
}


def always(payment: Payment) -> bool:
    return True


def _compiled(node: Any, test: Test) -> None:
    object.__setattr__(node, "matches", test)


@dataclass(frozen=True, slots=True)
class Condition:
    """A field of the payment against a constant."""

    field: str
    op: str
    value: Decimal | str | frozenset[str] | frozenset[Decimal]
    # Compiled from the fields above; a closure, so pickling goes through __reduce__.
    matches: Test = dataclasses.field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        _compiled(self, _TESTS[self.op](operator.attrgetter(self.field), self.value))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Condition, (self.field, self.op, self.value))

    def to_json(self) -> dict[str, Any]:
        value: Any = self.value
        if isinstance(value, frozenset):
            value = sorted(str(v) for v in value)
        elif isinstance(value, Decimal):
            value = str(value)
        return {"field": self.field, "op": self.op, "value": value}


@dataclass(frozen=True, slots=True)
class FieldComparison:
    """A field of the payment against another field of the same payment."""

    field: str
    op: str
    ref: str
    matches: Test = dataclasses.field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        compare, left, right = _COMPARE[self.op], self.field, self.ref
        _compiled(self, lambda p: compare(getattr(p, left), getattr(p, right)))

    def __reduce__(self) -> tuple[Any, ...]:
        return (FieldComparison, (self.field, self.op, self.ref))

    def to_json(self) -> dict[str, Any]:
        return {"field": self.field, "op": self.op, "ref": self.ref}


@dataclass(frozen=True, slots=True)
class _Group:
    """A list of conditions, combined by the group's kind."""

    conditions: tuple[Node, ...]
    matches: Test = dataclasses.field(init=False, repr=False, compare=False, hash=False)
    key: ClassVar[str] = ""

    def __post_init__(self) -> None:
        _compiled(self, self.combine(c.matches for c in self.conditions))

    def combine(self, tests: Iterable[Test]) -> Test:
        raise NotImplementedError

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.conditions,))

    def to_json(self) -> dict[str, Any]:
        return {self.key: [c.to_json() for c in self.conditions]}


class AllOf(_Group):
    """Every condition of the group holds."""

    __slots__ = ()
    key = "all"

    def combine(self, tests: Iterable[Test]) -> Test:
        return all_of(tests)


class AnyOf(_Group):
    """At least one condition of the group holds."""

    __slots__ = ()
    key = "any"

    def combine(self, tests: Iterable[Test]) -> Test:
        return any_of(tests)


@dataclass(frozen=True, slots=True)
class Not:
    """The condition does not hold."""

    condition: Node
    matches: Test = dataclasses.field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        inner = self.condition.matches
        _compiled(self, lambda payment: not inner(payment))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Not, (self.condition,))

    def to_json(self) -> dict[str, Any]:
        return {"not": self.condition.to_json()}


Node = Condition | FieldComparison | AllOf | AnyOf | Not


def all_of(tests: Iterable[Test]) -> Test:
    """One test for a list of tests that must all hold (an empty list always holds)."""
    found = tuple(tests)
    if not found:
        return always
    if len(found) == 1:
        return found[0]

    def test(payment: Payment) -> bool:
        # A loop, not all(genexpr): every payment meets every filter.
        for t in found:  # noqa: SIM110
            if not t(payment):
                return False
        return True

    return test


def any_of(tests: Iterable[Test]) -> Test:
    found = tuple(tests)
    if len(found) == 1:
        return found[0]

    def test(payment: Payment) -> bool:
        for t in found:  # noqa: SIM110
            if t(payment):
                return True
        return False

    return test


def parse_decimal(field: str, value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise RuleError(field, "must be a number")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise RuleError(field, f"{value!r} is not a number") from None
    if not number.is_finite():
        raise RuleError(field, "must be finite")
    return number


@dataclass
class _Budget:
    """How many comparisons a rule may still hold."""

    left: int = MAX_CONDITIONS


def parse_filter(where: str, raw: object) -> tuple[Node, ...]:
    """A filter: a list of conditions that must all hold (``where`` names it in errors)."""
    if not isinstance(raw, list):
        raise RuleError(where, "must be a list of conditions")
    budget = _Budget()
    return tuple(_node(f"{where}[{i}]", c, 1, budget) for i, c in enumerate(raw))


def _node(where: str, raw: object, depth: int, budget: _Budget) -> Node:
    if not isinstance(raw, Mapping):
        raise RuleError(where, "must be an object: {field, op, value or ref}, {any}, {all}, {not}")
    groups = [key for key in GROUP_KEYS if key in raw]
    if groups:
        if len(raw) != 1:
            raise RuleError(
                where,
                f"a group holds only its {groups[0]!r}: unknown keys "
                f"{sorted(set(raw) - {groups[0]})}",
            )
        return _group(where, groups[0], raw[groups[0]], depth, budget)
    budget.left -= 1
    if budget.left < 0:
        raise RuleError(where, f"one rule holds at most {MAX_CONDITIONS} conditions")
    return _comparison(where, raw)


def _group(where: str, key: str, raw: object, depth: int, budget: _Budget) -> Node:
    inner = f"{where}.{key}"
    if depth >= MAX_DEPTH:
        raise RuleError(inner, f"groups nest at most {MAX_DEPTH} deep")
    if key == "not":
        return Not(_node(inner, raw, depth + 1, budget))
    if not isinstance(raw, list) or not raw:
        raise RuleError(inner, "must be a non-empty list of conditions")
    conditions = tuple(_node(f"{inner}[{i}]", c, depth + 1, budget) for i, c in enumerate(raw))
    return AllOf(conditions) if key == "all" else AnyOf(conditions)


def _comparison(where: str, raw: Mapping[str, Any]) -> Node:
    unknown = set(raw) - {"field", "op", "value", "ref"}
    if unknown:
        raise RuleError(where, f"unknown keys {sorted(unknown)}")
    name, op = raw.get("field"), raw.get("op")
    if name not in FILTER_FIELDS:
        raise RuleError(f"{where}.field", f"{name!r} is not one of {', '.join(FILTER_FIELDS)}")
    if op not in FILTER_OPS:
        raise RuleError(f"{where}.op", f"{op!r} is not one of {', '.join(FILTER_OPS)}")
    if "ref" in raw:
        if "value" in raw:
            raise RuleError(where, "compares with a value or a ref, not both")
        return _field_comparison(where, name, op, raw["ref"])
    if "value" not in raw:
        raise RuleError(f"{where}.value", "is missing")
    if op in ("in", "not in"):
        return _membership(where, name, op, raw["value"])
    value = raw["value"]
    if name == "amount":
        return Condition(name, op, parse_decimal(f"{where}.value", value))
    if not isinstance(value, str):
        raise RuleError(f"{where}.value", f"must be a string for field {name!r}")
    if op not in ("==", "!="):
        raise RuleError(f"{where}.op", f"'{op}' compares numbers; field {name!r} is a string")
    return Condition(name, op, value)


def _field_comparison(where: str, name: str, op: str, ref: object) -> Node:
    if op in ("in", "not in"):
        raise RuleError(f"{where}.op", f"'{op}' takes a list value, not a ref")
    if ref not in FILTER_FIELDS:
        raise RuleError(f"{where}.ref", f"{ref!r} is not one of {', '.join(FILTER_FIELDS)}")
    assert isinstance(ref, str)
    if ref == name:
        raise RuleError(f"{where}.ref", f"compares {name!r} with itself")
    if (name == "amount") != (ref == "amount"):
        raise RuleError(f"{where}.ref", f"{ref!r} and {name!r} are not both amounts or text")
    if name != "amount" and op not in ("==", "!="):
        raise RuleError(f"{where}.op", f"'{op}' compares numbers; field {name!r} is a string")
    return FieldComparison(name, op, ref)


def _membership(where: str, name: str, op: str, value: object) -> Condition:
    """An ``in`` / ``not in`` condition: a non-empty list of amounts or of strings."""
    if not isinstance(value, list) or not value:
        raise RuleError(f"{where}.value", f"must be a non-empty list for '{op}'")
    if name == "amount":
        return Condition(name, op, frozenset(parse_decimal(f"{where}.value", v) for v in value))
    if not all(isinstance(v, str) for v in value):
        raise RuleError(f"{where}.value", f"must be a list of strings for field {name!r}")
    return Condition(name, op, frozenset(value))

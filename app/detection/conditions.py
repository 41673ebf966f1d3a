"""Conditions on a payment, as every kind of rule writes its filters.

A filter is a list of conditions a payment must all meet. A condition is one of:

* ``{field, op, value}``: a field of the payment against a constant;
* ``{field, op, ref}``: a field of the payment against another of its fields
  (``ref: merchant_id``) or, in a step of a sequence rule, against a field of the event an
  earlier step matched (``ref: steps[0].country``);
* ``{field, op: in | not in, value: "@name"}``: a field of the payment on a named list
  (``app.detection.lists``);
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
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from app.detection.lists import LIST_NAME, LIST_PREFIX, Entry, ListBook, is_bin_list, listbook
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
    "type",  # the event's type: payment unless it says (app.detection.models.EVENT_TYPES)
    "bin",  # the card's BIN, "" when the payment does not say (app.detection.models.BIN)
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


def _needs_the_earlier_steps(payment: Payment) -> bool:
    raise TypeError("a comparison with an earlier step is evaluated with the steps (holds_in)")


@dataclass(frozen=True, slots=True)
class StepComparison:
    """A field of the payment against a field of the event an earlier step of the same
    sequence matched. It has no value alone: see ``compile_possible`` and ``compile_holds``."""

    field: str
    op: str
    step: int
    ref: str
    matches: Test = dataclasses.field(
        default=_needs_the_earlier_steps, init=False, repr=False, compare=False, hash=False
    )

    def __reduce__(self) -> tuple[Any, ...]:
        return (StepComparison, (self.field, self.op, self.step, self.ref))

    def to_json(self) -> dict[str, Any]:
        return {"field": self.field, "op": self.op, "ref": f"steps[{self.step}].{self.ref}"}


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


@dataclass(frozen=True, slots=True)
class ListCondition:
    """A field of the payment on (``in``) or not on (``not in``) a named list, as the
    worker's lists hold it when the payment is decided, judged at the payment's event time
    (``app.detection.lists``). A list no entry names yet is empty: ``in`` holds for no
    payment, ``not in`` for every one."""

    field: str
    op: str
    list: str
    matches: Test = dataclasses.field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        _compiled(self, list_test(listbook, self.field, self.op, self.list))

    def __reduce__(self) -> tuple[Any, ...]:
        # To another process (a backtest's), with the list's entries as this one holds them.
        return (_unpickled, (self.field, self.op, self.list, listbook.snapshot(self.list)))

    def to_json(self) -> dict[str, Any]:
        return {"field": self.field, "op": self.op, "value": LIST_PREFIX + self.list}


def _unpickled(field: str, op: str, name: str, entries: tuple[Entry, ...]) -> ListCondition:
    """A list condition unpickled: a process without a follower of the lists topics (a
    backtest's) takes the list's entries it came with, so it decides as the sender would."""
    if not listbook.loaded.is_set():
        listbook.install(name, entries)
    return ListCondition(field, op, name)


def list_names(raw: object) -> set[str]:
    """The names of the lists a rule's JSON reads (``{op: in, value: "@name"}`` anywhere)."""
    found: set[str] = set()
    if isinstance(raw, list):
        for item in raw:
            found |= list_names(item)
    elif isinstance(raw, Mapping):
        value = raw.get("value")
        if raw.get("op") in ("in", "not in") and isinstance(value, str):
            found.add(value.removeprefix(LIST_PREFIX))
        for inner in raw.values():
            found |= list_names(inner)
    return found


def list_test(book: ListBook, name: str, op: str, list_name: str) -> Test:
    """The test of a list condition on ``book`` (the lists are data the test reads)."""
    get, holds = operator.attrgetter(name), book.holds
    if is_bin_list(list_name):
        holds = book.holds_bin  # an 8-digit BIN is on the list of its 6-digit prefix too
    if op == "in":
        return lambda payment: holds(list_name, get(payment), payment.ts_ms)
    return lambda payment: not holds(list_name, get(payment), payment.ts_ms)


Node = Condition | FieldComparison | StepComparison | ListCondition | AllOf | AnyOf | Not


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
class Budget:
    """How many comparisons a rule may still hold (one budget for all its filters)."""

    left: int = MAX_CONDITIONS


_STEP_REF = re.compile(r"^steps\[(\d{1,2})\]\.(\w+)$")


def parse_filter(
    where: str, raw: object, budget: Budget | None = None, steps_before: int | None = None
) -> tuple[Node, ...]:
    """A filter: a list of conditions that must all hold (``where`` names it in errors).
    ``steps_before``: in a sequence rule's step, how many steps come before it (what its
    conditions may refer to); None outside a sequence."""
    if not isinstance(raw, list):
        raise RuleError(where, "must be a list of conditions")
    scope = _Scope(budget or Budget(), steps_before)
    return tuple(_node(f"{where}[{i}]", c, 1, scope) for i, c in enumerate(raw))


@dataclass(frozen=True)
class _Scope:
    budget: Budget
    steps_before: int | None


def _node(where: str, raw: object, depth: int, scope: _Scope) -> Node:
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
        return _group(where, groups[0], raw[groups[0]], depth, scope)
    scope.budget.left -= 1
    if scope.budget.left < 0:
        raise RuleError(where, f"one rule holds at most {MAX_CONDITIONS} conditions")
    return _comparison(where, raw, scope)


def _group(where: str, key: str, raw: object, depth: int, scope: _Scope) -> Node:
    inner = f"{where}.{key}"
    if depth >= MAX_DEPTH:
        raise RuleError(inner, f"groups nest at most {MAX_DEPTH} deep")
    if key == "not":
        return Not(_node(inner, raw, depth + 1, scope))
    if not isinstance(raw, list) or not raw:
        raise RuleError(inner, "must be a non-empty list of conditions")
    conditions = tuple(_node(f"{inner}[{i}]", c, depth + 1, scope) for i, c in enumerate(raw))
    return AllOf(conditions) if key == "all" else AnyOf(conditions)


def _comparison(where: str, raw: Mapping[str, Any], scope: _Scope) -> Node:
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
        return _field_comparison(where, name, op, raw["ref"], scope.steps_before)
    if "value" not in raw:
        raise RuleError(f"{where}.value", "is missing")
    if op in ("in", "not in") and isinstance(raw["value"], str):
        return _list_condition(where, name, op, raw["value"])
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


def _field_comparison(
    where: str, name: str, op: str, ref: object, steps_before: int | None
) -> Node:
    if op in ("in", "not in"):
        raise RuleError(f"{where}.op", f"'{op}' takes a list value, not a ref")
    step_ref = _STEP_REF.match(ref) if isinstance(ref, str) else None
    if step_ref is not None:
        return _step_comparison(where, name, op, int(step_ref[1]), step_ref[2], steps_before)
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


def _step_comparison(
    where: str, name: str, op: str, step: int, ref: str, steps_before: int | None
) -> StepComparison:
    if steps_before is None:
        raise RuleError(f"{where}.ref", "only a step of a sequence refers to an earlier step")
    if not steps_before:
        raise RuleError(f"{where}.ref", "the first step has no earlier step to refer to")
    if step >= steps_before:
        earlier = "steps[0]" if steps_before == 1 else f"steps[0] to steps[{steps_before - 1}]"
        raise RuleError(f"{where}.ref", f"steps[{step}] is not an earlier step: {earlier}")
    if ref not in FILTER_FIELDS:
        raise RuleError(f"{where}.ref", f"{ref!r} is not one of {', '.join(FILTER_FIELDS)}")
    if (name == "amount") != (ref == "amount"):
        raise RuleError(f"{where}.ref", f"{ref!r} and {name!r} are not both amounts or text")
    if name != "amount" and op not in ("==", "!="):
        raise RuleError(f"{where}.op", f"'{op}' compares numbers; field {name!r} is a string")
    return StepComparison(name, op, step, ref)


def _list_condition(where: str, name: str, op: str, value: str) -> ListCondition:
    """``in`` / ``not in`` a named list: ``value`` is ``@name``."""
    if not value.startswith(LIST_PREFIX):
        raise RuleError(
            f"{where}.value", f"must be a non-empty list for '{op}', or a list name as '@name'"
        )
    list_name = value.removeprefix(LIST_PREFIX)
    if not LIST_NAME.match(list_name):
        raise RuleError(
            f"{where}.value",
            f"{value!r} is not a list name: '@' then 1-64 characters of a-z, 0-9 and '_',"
            " starting with a letter",
        )
    if name == "amount":
        raise RuleError(f"{where}.field", "lists hold text: 'amount' cannot be on a list")
    if is_bin_list(list_name) and name != "bin":
        raise RuleError(f"{where}.field", f"{value!r} is a BIN list: only field 'bin' reads it")
    if name == "bin" and not is_bin_list(list_name):
        raise RuleError(
            f"{where}.value",
            f"field 'bin' reads BIN lists only, named 'bins' or ending in '_bins' (their"
            f" entries are checked as BINs): not {value!r}",
        )
    return ListCondition(name, op, list_name)


def _membership(where: str, name: str, op: str, value: object) -> Condition:
    """An ``in`` / ``not in`` condition: a non-empty list of amounts or of strings."""
    if not isinstance(value, list) or not value:
        raise RuleError(f"{where}.value", f"must be a non-empty list for '{op}'")
    if name == "amount":
        return Condition(name, op, frozenset(parse_decimal(f"{where}.value", v) for v in value))
    if not all(isinstance(v, str) for v in value):
        raise RuleError(f"{where}.value", f"must be a list of strings for field {name!r}")
    return Condition(name, op, frozenset(value))


# ------------------------------------------------------------ conditions on earlier steps

# A condition of a sequence step read before the earlier steps are known: it holds, does
# not hold, or depends on them. Kleene's three values as 1, 0 and 2.
Possible = Callable[[Payment], int]
Holds = Callable[[Payment, Sequence[Payment]], bool]
_UNKNOWN = 2


def refers_to_steps(node: Node) -> bool:
    if isinstance(node, StepComparison):
        return True
    if isinstance(node, Not):
        return refers_to_steps(node.condition)
    if isinstance(node, _Group):
        return any(refers_to_steps(c) for c in node.conditions)
    return False


def fields_of(node: Node) -> set[str]:
    """The payment fields the condition reads of the payment it tests (``field`` and a
    same-payment ``ref``)."""
    if isinstance(node, Not):
        return fields_of(node.condition)
    if isinstance(node, _Group):
        return set().union(*(fields_of(c) for c in node.conditions))
    if isinstance(node, FieldComparison):
        return {node.field, node.ref}
    return {node.field}


def step_refs_of(node: Node) -> set[tuple[int, str]]:
    """(step, field) of every earlier step's field the condition reads."""
    if isinstance(node, StepComparison):
        return {(node.step, node.ref)}
    if isinstance(node, Not):
        return step_refs_of(node.condition)
    if isinstance(node, _Group):
        return set().union(*(step_refs_of(c) for c in node.conditions))
    return set()


def compile_possible(node: Node) -> Possible:
    """1 if the condition holds whatever the earlier steps, 0 if it holds for none of
    them, 2 if that depends on them."""
    if not refers_to_steps(node):
        test = node.matches
        return lambda payment: 1 if test(payment) else 0
    if isinstance(node, StepComparison):
        return lambda payment: _UNKNOWN
    if isinstance(node, Not):
        inner = compile_possible(node.condition)
        return lambda payment: _negate(inner(payment))
    assert isinstance(node, _Group)
    parts = tuple(compile_possible(c) for c in node.conditions)
    if isinstance(node, AnyOf):
        return lambda payment: _any3([part(payment) for part in parts])
    return lambda payment: _all3([part(payment) for part in parts])


def all_possible(parts: Sequence[Possible]) -> Possible:
    """A list of conditions that must all hold, read before the earlier steps are known."""

    def possible(payment: Payment) -> int:
        result = 1
        for part in parts:
            value = part(payment)
            if value == 0:
                return 0
            if value == _UNKNOWN:
                result = _UNKNOWN
        return result

    return possible


def _negate(value: int) -> int:
    return value if value == _UNKNOWN else 1 - value


def _any3(values: list[int]) -> int:
    return 1 if 1 in values else (_UNKNOWN if _UNKNOWN in values else 0)


def _all3(values: list[int]) -> int:
    return 0 if 0 in values else (_UNKNOWN if _UNKNOWN in values else 1)


def compile_holds(node: Node) -> Holds:
    """Whether the condition holds for ``payment``, given the events the earlier steps
    matched (``earlier[i]`` matched step ``i``)."""
    if not refers_to_steps(node):
        test = node.matches
        return lambda payment, earlier: test(payment)
    if isinstance(node, StepComparison):
        compare, field, step, ref = _COMPARE[node.op], node.field, node.step, node.ref
        return lambda payment, earlier: compare(
            getattr(payment, field), getattr(earlier[step], ref)
        )
    if isinstance(node, Not):
        inner = compile_holds(node.condition)
        return lambda payment, earlier: not inner(payment, earlier)
    assert isinstance(node, _Group)
    parts = tuple(compile_holds(c) for c in node.conditions)
    if isinstance(node, AnyOf):
        return lambda payment, earlier: any(part(payment, earlier) for part in parts)
    return lambda payment, earlier: all(part(payment, earlier) for part in parts)

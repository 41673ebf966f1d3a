"""Rule model and validation.

A rule arrives as JSON (or YAML via the CLI) and becomes an immutable :class:`Rule`: one
type per rule *kind*, chosen by the rule's ``kind`` field. A rule without ``kind`` is an
:class:`AggregateRule` (the only kind before kinds existed), so every rule already on the
rules topic keeps its meaning. Anything that does not validate raises :class:`RuleError`
naming the field and the problem, so the CLI, the HTTP API and the workers all refuse it
the same way.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any, ClassVar

from app.detection.aggregates import STATISTICS, Aggregate, Statistic, parse_aggregate
from app.detection.conditions import (
    FILTER_FIELDS,
    FILTER_OPS,
    STRING_FIELDS,
    Budget,
    Holds,
    Node,
    Possible,
    RuleError,
    all_of,
    all_possible,
    compile_holds,
    compile_possible,
    fields_of,
    parse_decimal,
    parse_filter,
    refers_to_steps,
    step_refs_of,
)
from app.detection.geo import located
from app.detection.models import PAYMENT, Payment

__all__ = [
    "FILTER_FIELDS",
    "FILTER_OPS",
    "GROUP_FIELDS",
    "KINDS",
    "RULE_KEYS",
    "SEED_RULE",
    "SEVERITIES",
    "STATUSES",
    "STRING_FIELDS",
    "THRESHOLD_OPS",
    "AbsenceRule",
    "AggregateRule",
    "FirstSeenRule",
    "GeoVelocityRule",
    "HistoryRule",
    "Rule",
    "RuleError",
    "SequenceRule",
    "Step",
    "check_retention",
    "parse_rule",
    "parse_rule_bytes",
]

GROUP_FIELDS = ("card_id", "account_id", "merchant_id", "device_id", "ip")
# Only monotone thresholds: a burst rule fires when enough happened, never when too little.
THRESHOLD_OPS = (">=", ">")
STATUSES = ("active", "shadow", "paused")
SEVERITIES = ("low", "medium", "high", "critical")
_RULE_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MAX_WINDOW_S = 7 * 24 * 3600
# The longest window of the kinds that remember a key's history compactly (history and
# first-seen rules): a year. A worker refuses any window longer than its state retention
# allows (``check_retention``).
MAX_KEY_HISTORY_WINDOW_S = 366 * 24 * 3600
# The most events a count or distinct count may need; a key keeps at least this many.
MAX_COUNT_THRESHOLD = 1000
# What every kind of rule has.
COMMON_KEYS = frozenset(
    {"rule_id", "version", "kind", "status", "description", "group_by", "window", "severity"}
)
# The keys of an aggregate rule (the kind a rule without ``kind`` is).
RULE_KEYS = COMMON_KEYS | {"filter", "aggregate", "threshold"}
SEQUENCE_KEYS = COMMON_KEYS | {"steps"}
FIRST_SEEN_KEYS = COMMON_KEYS | {"field", "filter"}
HISTORY_KEYS = COMMON_KEYS | {"filter", "statistic", "op", "factor", "min_earlier"}
HISTORY_OPS = (">", ">=", "<", "<=")
# How many earlier payments a history rule may ask for: a key keeps at least this many.
MAX_MIN_EARLIER = MAX_COUNT_THRESHOLD
# The fields whose first use a first-seen rule can watch (a txn id is always new; an
# event's type is not a value of the key's).
# Not the BIN: a payment may give none, and "" would count as a value first seen.
FIRST_SEEN_FIELDS = tuple(name for name in STRING_FIELDS if name not in ("txn_id", "type", "bin"))
STEP_KEYS = frozenset({"filter"})
# How many steps a sequence has: a bound on what matching one payment may cost.
MIN_STEPS, MAX_STEPS = 2, 5


Test = Callable[[Payment], bool]


def is_payment(event: Payment) -> bool:
    return event.type == PAYMENT


def _payment_possible(event: Payment) -> int:
    return 1 if event.type == PAYMENT else 0


def names_type(conditions: tuple[Node, ...]) -> bool:
    """Whether a filter reads the event's ``type``: one that does not is about payments."""
    return any("type" in fields_of(c) for c in conditions)


def typed(conditions: tuple[Node, ...], group_by: tuple[str, ...]) -> Test:
    """The test of a filter, with what its event types imply. A filter that names no
    ``type`` passes payments only, so no rule written before event types existed sees
    another; one that names a type also needs the event to have every group-by field (a
    login has no card, nor a merchant): such an event is not evaluated by that rule."""
    tests = [c.matches for c in conditions]
    if not names_type(conditions):
        if len(tests) == 1:  # the usual filter: one call fewer than a loop over two tests
            only = tests[0]
            return lambda event: only(event) and event.type == PAYMENT
        return all_of([*tests, is_payment])  # last: most payments fail a condition before
    return all_of([*tests, has_fields(group_by)])


def has_fields(names: tuple[str, ...]) -> Test:
    """Whether an event has each of these fields (a field its type has not is empty)."""

    def present(event: Payment) -> bool:
        for name in names:  # noqa: SIM110
            if not getattr(event, name):
                return False
        return True

    return present


@dataclass(frozen=True, slots=True)
class Rule:
    """What every kind of rule has; each kind is a subclass (see ``KINDS``).

    ``qualifies(payment)`` says whether the payment can matter to the rule at all: change
    its state on the payment's key or raise an alert. The engine, the forwarding of
    payments to other group-bys and the backtest skip every payment no live rule
    qualifies, which is what keeps a payment that no rule looks at free of any state."""

    rule_id: str
    version: int
    status: str
    description: str
    group_by: tuple[str, ...]
    window_ms: int
    severity: str
    kind: ClassVar[str] = ""
    qualifies: Test = dataclasses.field(init=False, repr=False, compare=False, hash=False)

    def __reduce__(self) -> tuple[Any, ...]:
        # The compiled tests are closures: rebuild them from the fields.
        return (type(self), tuple(getattr(self, f.name) for f in fields(self) if f.init))

    @property
    def group_by_name(self) -> str:
        return "+".join(self.group_by)

    def group_key(self, payment: Payment) -> str:
        if len(self.group_by) == 1:
            return str(payment.field(self.group_by[0]))
        return "|".join(str(payment.field(name)) for name in self.group_by)

    def _common_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"rule_id": self.rule_id, "version": self.version}
        if self.kind != AggregateRule.kind:
            # An aggregate rule is written without it, exactly as before kinds existed.
            body["kind"] = self.kind
        body.update(status=self.status, description=self.description, group_by=list(self.group_by))
        return body

    def _window_json(self) -> int | float:
        return self.window_ms / 1000 if self.window_ms % 1000 else self.window_ms // 1000

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError

    def summary(self) -> dict[str, str]:
        """What the rule measures and when it fires, in short, for the dashboard."""
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class AggregateRule(Rule):
    """Enough qualifying payments on one key within a window: an aggregate (count, sum,
    distinct count) over the payments that pass ``filter`` reaches ``threshold``."""

    filter: tuple[Node, ...]
    aggregate: Aggregate
    threshold_op: str
    threshold: Decimal
    kind: ClassVar[str] = "aggregate"

    def __post_init__(self) -> None:
        object.__setattr__(self, "qualifies", typed(self.filter, self.group_by))

    def to_json(self) -> dict[str, Any]:
        return {
            **self._common_json(),
            "filter": [condition.to_json() for condition in self.filter],
            "aggregate": self.aggregate.text,
            "window": self._window_json(),
            "threshold": {"op": self.threshold_op, "value": str(self.threshold)},
            "severity": self.severity,
        }

    def summary(self) -> dict[str, str]:
        return {
            "aggregate": self.aggregate.text,
            "threshold": f"{self.threshold_op} {self.threshold}",
        }


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a sequence: a filter, whose conditions may compare the payment with
    the events the earlier steps matched (``ref: steps[0].country``)."""

    filter: tuple[Node, ...]
    # Whether the conditions read earlier steps; then ``possible`` may answer 2 (it
    # depends on them) and ``holds`` decides.
    refers: bool = dataclasses.field(init=False, repr=False, compare=False, hash=False)
    # (earlier step, field) of every field of an earlier step its conditions read.
    reads: tuple[tuple[int, str], ...] = dataclasses.field(
        init=False, repr=False, compare=False, hash=False
    )
    possible: Possible = dataclasses.field(init=False, repr=False, compare=False, hash=False)
    holds: Holds = dataclasses.field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        parts = tuple(compile_possible(c) for c in self.filter)
        if not names_type(self.filter):
            parts = (*parts, _payment_possible)  # a step that names no type: payments only
        holds = tuple(compile_holds(c) for c in self.filter)
        object.__setattr__(self, "refers", any(refers_to_steps(c) for c in self.filter))
        reads: set[tuple[int, str]] = set().union(*(step_refs_of(c) for c in self.filter))
        object.__setattr__(self, "reads", tuple(sorted(reads)))
        object.__setattr__(self, "possible", all_possible(parts))
        object.__setattr__(self, "holds", lambda p, earlier: all(h(p, earlier) for h in holds))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Step, (self.filter,))

    def to_json(self) -> dict[str, Any]:
        return {"filter": [c.to_json() for c in self.filter]}


@dataclass(frozen=True, slots=True)
class SequenceRule(Rule):
    """Payments matching ``steps`` in event-time order on one key, the first and the last
    at most ``window`` apart; each event is used by at most one alert (the matching rules
    are in ``app.detection.kinds.sequence``)."""

    steps: tuple[Step, ...]
    kind: ClassVar[str] = "sequence"
    # The fields of a payment its events keep to decide the steps that read earlier ones:
    # every field such a step reads, and every field of an earlier step it reads.
    kept_fields: tuple[str, ...] = dataclasses.field(
        init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        possible = tuple(step.possible for step in self.steps)

        def qualifies(payment: Payment) -> bool:
            for test in possible:  # noqa: SIM110
                if test(payment):
                    return True
            return False

        if any(names_type(step.filter) for step in self.steps):
            present = has_fields(self.group_by)
            object.__setattr__(self, "qualifies", lambda p: qualifies(p) and present(p))
        else:
            object.__setattr__(self, "qualifies", qualifies)
        kept: set[str] = set()
        for step in self.steps:
            if step.refers:
                kept.update(*(fields_of(c) for c in step.filter))
                kept.update(name for _, name in step.reads)
        object.__setattr__(self, "kept_fields", tuple(sorted(kept)))

    def to_json(self) -> dict[str, Any]:
        return {
            **self._common_json(),
            "steps": [step.to_json() for step in self.steps],
            "window": self._window_json(),
            "severity": self.severity,
        }

    def summary(self) -> dict[str, str]:
        return {"aggregate": f"sequence of {len(self.steps)} steps", "threshold": ""}


@dataclass(frozen=True, slots=True)
class KeyHistoryRule(Rule):
    """A kind that judges a payment by its key's earlier payments: every payment of the
    key is history for the next, whatever ``filter`` says (a device first used for a small
    payment is known when a large one follows), and a payment alerts only if it passes
    ``filter``."""

    filter: tuple[Node, ...]
    # Whether a payment may alert, compiled from ``filter``.
    alerts_on: Test = dataclasses.field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        alerts_on = all_of(c.matches for c in self.filter)
        if names_type(self.filter):
            # History is the key's payments and the events of the types it may alert on.
            present = has_fields(self.group_by)
            object.__setattr__(
                self, "qualifies", lambda p: (p.type == PAYMENT or alerts_on(p)) and present(p)
            )
        else:
            object.__setattr__(self, "qualifies", is_payment)
        object.__setattr__(self, "alerts_on", alerts_on)


@dataclass(frozen=True, slots=True)
class FirstSeenRule(KeyHistoryRule):
    """A payment whose value of ``field`` the key has not seen within the window before it,
    while it has seen others, and that passes ``filter`` (the matching rules are in
    ``app.detection.kinds.first_seen``)."""

    field: str
    kind: ClassVar[str] = "first_seen"

    def to_json(self) -> dict[str, Any]:
        return {
            **self._common_json(),
            "field": self.field,
            "filter": [condition.to_json() for condition in self.filter],
            "window": self._window_json(),
            "severity": self.severity,
        }

    def summary(self) -> dict[str, str]:
        return {"aggregate": f"first {self.field}", "threshold": ""}


@dataclass(frozen=True, slots=True)
class HistoryRule(KeyHistoryRule):
    """A payment whose amount compares with ``factor`` times a statistic of its key's
    earlier payments within the window (``amount > 10 * avg(amount)``), when the key has at
    least ``min_earlier`` of them (the matching rules are in ``app.detection.kinds.history``)."""

    statistic: Statistic
    op: str
    factor: Decimal
    min_earlier: int
    kind: ClassVar[str] = "history"

    def to_json(self) -> dict[str, Any]:
        return {
            **self._common_json(),
            "filter": [condition.to_json() for condition in self.filter],
            "statistic": self.statistic.text,
            "op": self.op,
            "factor": str(self.factor),
            "min_earlier": self.min_earlier,
            "window": self._window_json(),
            "severity": self.severity,
        }

    @property
    def bucket_ms(self) -> int:
        """The width of the time buckets the key's older payments are folded into: a
        sixtieth of the window in whole seconds, at least one (a 60-day window: a day)."""
        return max(1000, self.window_ms // 60 // 1000 * 1000)

    def summary(self) -> dict[str, str]:
        return {
            "aggregate": f"amount {self.op} {self.factor} * {self.statistic.text}",
            "threshold": f"after {self.min_earlier}",
        }


ABSENCE_KEYS = COMMON_KEYS | {"filter", "not_followed_by"}


@dataclass(frozen=True, slots=True)
class AbsenceRule(Rule):
    """A payment passing ``filter`` (A) that no payment passing ``not_followed_by`` (B)
    follows on its key within ``window`` (T) of event time: alerted once the key's
    partition's event time has passed A's deadline by the allowed lateness (the matching
    rules are in ``app.detection.kinds.absence``)."""

    filter: tuple[Node, ...]
    not_followed_by: tuple[Node, ...]
    kind: ClassVar[str] = "absence"
    is_a: Test = dataclasses.field(init=False, repr=False, compare=False, hash=False)
    is_b: Test = dataclasses.field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        # Each side, like any filter, passes payments only unless it names a ``type``.
        is_a = typed(self.filter, self.group_by)
        is_b = typed(self.not_followed_by, self.group_by)
        object.__setattr__(self, "is_a", is_a)
        object.__setattr__(self, "is_b", is_b)
        object.__setattr__(self, "qualifies", lambda payment: is_a(payment) or is_b(payment))

    def to_json(self) -> dict[str, Any]:
        return {
            **self._common_json(),
            "filter": [condition.to_json() for condition in self.filter],
            "not_followed_by": [condition.to_json() for condition in self.not_followed_by],
            "window": self._window_json(),
            "severity": self.severity,
        }

    def summary(self) -> dict[str, str]:
        return {"aggregate": "A not followed by B", "threshold": ""}


def _group_by(raw: Mapping[str, Any]) -> tuple[str, ...]:
    group_by = raw.get("group_by", ["card_id"])
    if isinstance(group_by, str):
        group_by = [group_by]
    if not isinstance(group_by, list) or not group_by:
        raise RuleError("group_by", "must be a field name or a non-empty list of them")
    for name in group_by:
        if name not in GROUP_FIELDS:
            raise RuleError("group_by", f"{name!r} is not one of {', '.join(GROUP_FIELDS)}")
    if len(set(group_by)) != len(group_by):
        raise RuleError("group_by", "lists a field twice")
    return tuple(group_by)


def _aggregate(raw: Mapping[str, Any]) -> Aggregate:
    try:
        return parse_aggregate(raw.get("aggregate", "count"), STRING_FIELDS)
    except ValueError as exc:
        raise RuleError("aggregate", str(exc)) from None


def _window_ms(raw: Mapping[str, Any]) -> int:
    window = raw.get("window")
    longest = (
        MAX_KEY_HISTORY_WINDOW_S
        if raw.get("kind") in (FirstSeenRule.kind, HistoryRule.kind)
        else MAX_WINDOW_S
    )
    if isinstance(window, bool) or not isinstance(window, int | float) or not 0 < window <= longest:
        raise RuleError("window", f"must be a number of seconds in (0, {longest}]")
    return int(Decimal(str(window)) * 1000)


def _threshold(raw: Mapping[str, Any], aggregate: Aggregate) -> tuple[str, Decimal]:
    threshold_raw = raw.get("threshold")
    if isinstance(threshold_raw, int | float) and not isinstance(threshold_raw, bool):
        threshold_raw = {"op": ">=", "value": threshold_raw}
    if not isinstance(threshold_raw, Mapping):
        raise RuleError("threshold", "must be an object {op, value} or a number")
    op = threshold_raw.get("op", ">=")
    if op not in THRESHOLD_OPS:
        raise RuleError("threshold.op", f"{op!r} is not one of {', '.join(THRESHOLD_OPS)}")
    threshold = parse_decimal("threshold.value", threshold_raw.get("value"))
    if threshold <= 0 if op == ">=" else threshold < 0:
        raise RuleError("threshold.value", "must be positive (a rule must need at least one event)")
    if aggregate.whole and threshold != threshold.to_integral_value():
        raise RuleError("threshold.value", f"must be a whole number for {aggregate.text}")
    if aggregate.whole and threshold > MAX_COUNT_THRESHOLD:
        # A key keeps at least this many events (FRAUD_MAX_KEY_EVENTS): more could never meet.
        raise RuleError("threshold.value", f"must be at most {MAX_COUNT_THRESHOLD}")
    return op, threshold


def _common(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The fields every kind of rule has (those of :class:`Rule`), validated."""
    rule_id = raw.get("rule_id")
    if not isinstance(rule_id, str) or not _RULE_ID.match(rule_id):
        raise RuleError("rule_id", "must be 1-64 characters of a-z, 0-9, '.', '_' or '-'")
    version = raw.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise RuleError("version", "must be an integer >= 1")
    status = raw.get("status", "active")
    if status not in STATUSES:
        raise RuleError("status", f"{status!r} is not one of {', '.join(STATUSES)}")
    description = raw.get("description", "")
    if not isinstance(description, str) or len(description) > 500:
        raise RuleError("description", "must be a string of at most 500 characters")
    group_by = _group_by(raw)
    window_ms = _window_ms(raw)
    severity = raw.get("severity", "medium")
    if severity not in SEVERITIES:
        raise RuleError("severity", f"{severity!r} is not one of {', '.join(SEVERITIES)}")
    return {
        "rule_id": rule_id,
        "version": version,
        "status": status,
        "description": description,
        "group_by": group_by,
        "window_ms": window_ms,
        "severity": severity,
    }


def _parse_aggregate_rule(raw: Mapping[str, Any], common: dict[str, Any]) -> AggregateRule:
    conditions = parse_filter("filter", raw.get("filter", []))
    aggregate = _aggregate(raw)
    threshold_op, threshold = _threshold(raw, aggregate)
    return AggregateRule(
        **common,
        filter=conditions,
        aggregate=aggregate,
        threshold_op=threshold_op,
        threshold=threshold,
    )


def _parse_sequence_rule(raw: Mapping[str, Any], common: dict[str, Any]) -> SequenceRule:
    steps_raw = raw.get("steps")
    if not isinstance(steps_raw, list) or not MIN_STEPS <= len(steps_raw) <= MAX_STEPS:
        raise RuleError("steps", f"must be a list of {MIN_STEPS} to {MAX_STEPS} steps")
    budget = Budget()
    steps = []
    for i, step in enumerate(steps_raw):
        where = f"steps[{i}]"
        if not isinstance(step, Mapping):
            raise RuleError(where, "must be an object {filter}")
        unknown = set(step) - STEP_KEYS
        if unknown:
            raise RuleError(where, f"unknown keys {sorted(unknown)}")
        conditions = parse_filter(f"{where}.filter", step.get("filter", []), budget, i)
        steps.append(Step(conditions))
    return SequenceRule(**common, steps=tuple(steps))


def _parse_first_seen_rule(raw: Mapping[str, Any], common: dict[str, Any]) -> FirstSeenRule:
    name = raw.get("field")
    if name not in FIRST_SEEN_FIELDS:
        raise RuleError("field", f"{name!r} is not one of {', '.join(FIRST_SEEN_FIELDS)}")
    assert isinstance(name, str)
    if name in common["group_by"]:
        raise RuleError("field", f"{name!r} is the key itself: the rule groups by it")
    conditions = parse_filter("filter", raw.get("filter", []))
    return FirstSeenRule(**common, field=name, filter=conditions)


def _parse_history_rule(raw: Mapping[str, Any], common: dict[str, Any]) -> HistoryRule:
    conditions = parse_filter("filter", raw.get("filter", []))
    statistic = raw.get("statistic")
    if statistic not in STATISTICS:
        raise RuleError("statistic", f"{statistic!r} is not one of {', '.join(STATISTICS)}")
    op = raw.get("op")
    if op not in HISTORY_OPS:
        raise RuleError("op", f"{op!r} is not one of {', '.join(HISTORY_OPS)}")
    factor = parse_decimal("factor", raw.get("factor", 1))
    if factor <= 0:
        raise RuleError("factor", "must be more than 0")
    min_earlier = raw.get("min_earlier", 1)
    if (
        isinstance(min_earlier, bool)
        or not isinstance(min_earlier, int)
        or not 1 <= min_earlier <= MAX_MIN_EARLIER
    ):
        raise RuleError("min_earlier", f"must be a whole number from 1 to {MAX_MIN_EARLIER}")
    return HistoryRule(
        **common,
        filter=conditions,
        statistic=STATISTICS[statistic],
        op=op,
        factor=factor,
        min_earlier=min_earlier,
    )


def _parse_absence_rule(raw: Mapping[str, Any], common: dict[str, Any]) -> AbsenceRule:
    conditions = parse_filter("filter", raw.get("filter", []))
    if "not_followed_by" not in raw:
        raise RuleError("not_followed_by", "is required: the filter of the payment expected")
    expected = parse_filter("not_followed_by", raw["not_followed_by"])
    return AbsenceRule(**common, filter=conditions, not_followed_by=expected)


# Every kind of rule: its keys and its parser. A rule without ``kind`` is an aggregate rule.
_Parser = Callable[[Mapping[str, Any], dict[str, Any]], Rule]
KINDS: dict[str, tuple[frozenset[str], _Parser]] = {
    AggregateRule.kind: (RULE_KEYS, _parse_aggregate_rule),
    SequenceRule.kind: (SEQUENCE_KEYS, _parse_sequence_rule),
    FirstSeenRule.kind: (FIRST_SEEN_KEYS, _parse_first_seen_rule),
    HistoryRule.kind: (HISTORY_KEYS, _parse_history_rule),
}


def parse_rule(raw: object) -> Rule:
    """Validate a decoded JSON/YAML object and build the :class:`Rule` of its kind."""
    if not isinstance(raw, Mapping):
        raise RuleError("rule", "must be a JSON object")
    kind = raw.get("kind", AggregateRule.kind)
    if not isinstance(kind, str) or kind not in KINDS:
        raise RuleError("kind", f"{kind!r} is not one of {', '.join(KINDS)}")
    keys, parse = KINDS[kind]
    unknown = set(raw) - keys
    if unknown:
        what = "a rule field" if kind == AggregateRule.kind else f"a field of a {kind} rule"
        raise RuleError(sorted(unknown)[0], f"is not {what}")
    return parse(raw, _common(raw))


def check_retention(rule: Rule, retention_ms: int, lateness_ms: int) -> None:
    """Refuse (naming ``window``) a rule whose window and the allowed lateness exceed the
    state retention (``FRAUD_STATE_RETENTION``): a key quiet for its window would lose its
    state before the window ends."""
    if rule.window_ms + lateness_ms > retention_ms:
        raise RuleError(
            "window",
            f"{rule.window_ms / 1000:g} s and the allowed lateness ({lateness_ms / 1000:g} s)"
            f" exceed the state retention, {retention_ms / 1000:g} s (FRAUD_STATE_RETENTION)",
        )


DEFAULT_MAX_RULE_BYTES = 16 * 1024


def parse_rule_bytes(raw: bytes | str, max_bytes: int = DEFAULT_MAX_RULE_BYTES) -> Rule:
    """A rule from its JSON encoding, as the rules topic and the HTTP API carry it."""
    if len(raw) > max_bytes:
        raise RuleError("rule", f"is {len(raw)} bytes, more than the limit of {max_bytes}")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise RuleError("rule", f"not JSON: {exc}") from None
    except RecursionError:
        raise RuleError("rule", "JSON nested too deeply") from None
    return parse_rule(body)


def _seed_rule(raw: dict[str, Any]) -> AggregateRule:
    rule = parse_rule(raw)
    assert isinstance(rule, AggregateRule)
    return rule


SEED_RULE = _seed_rule(
    {
        "rule_id": "high-value-burst",
        "version": 1,
        "status": "active",
        "description": "3 payments of 1000 or more on one card within 5 minutes",
        "group_by": ["card_id"],
        "filter": [{"field": "amount", "op": ">=", "value": "1000"}],
        "aggregate": "count",
        "window": 300,
        "threshold": {"op": ">=", "value": 3},
        "severity": "high",
    }
)


# ------------------------------------------------------------------- geo-velocity rules

GEO_VELOCITY_KEYS = COMMON_KEYS | {"filter", "max_speed_kmh", "min_distance_km", "use_centroids"}
# Faster than any airliner by default; at least this far apart, so that neighbouring
# countries' centroids (hundreds of km apart, the payments perhaps near one border) do not
# alert by themselves.
DEFAULT_MAX_SPEED_KMH = Decimal(1000)
DEFAULT_MIN_DISTANCE_KM = Decimal(500)
_HALF_EQUATOR_KM = Decimal(20_100)  # no two places on Earth are further apart


@dataclass(frozen=True, slots=True)
class GeoVelocityRule(Rule):
    """Two events of one key, next to each other in event time and at most ``window``
    apart, from places at least ``min_distance_km`` apart and too far for the time between
    them at ``max_speed_kmh`` (the matching rules are in ``app.detection.kinds.geo_velocity``).
    An event qualifies when it passes ``filter`` (payments only unless it names a type)
    and has a place: its ``lat``/``lon``, or (``use_centroids``) its country's centroid."""

    filter: tuple[Node, ...]
    max_speed_kmh: Decimal
    min_distance_km: Decimal
    use_centroids: bool = True
    kind: ClassVar[str] = "geo_velocity"

    def __post_init__(self) -> None:
        test = typed(self.filter, self.group_by)
        if self.use_centroids:
            object.__setattr__(self, "qualifies", lambda p: test(p) and located(p))
        else:
            object.__setattr__(self, "qualifies", lambda p: test(p) and p.lat is not None)

    def to_json(self) -> dict[str, Any]:
        return {
            **self._common_json(),
            "filter": [condition.to_json() for condition in self.filter],
            "max_speed_kmh": str(self.max_speed_kmh),
            "min_distance_km": str(self.min_distance_km),
            "use_centroids": self.use_centroids,
            "window": self._window_json(),
            "severity": self.severity,
        }

    def summary(self) -> dict[str, str]:
        return {
            "aggregate": f"travel faster than {self.max_speed_kmh} km/h",
            "threshold": f"over {self.min_distance_km} km",
        }


def _parse_geo_velocity_rule(raw: Mapping[str, Any], common: dict[str, Any]) -> GeoVelocityRule:
    conditions = parse_filter("filter", raw.get("filter", []))
    speed = parse_decimal("max_speed_kmh", raw.get("max_speed_kmh", DEFAULT_MAX_SPEED_KMH))
    if not 0 < speed <= 1_000_000:
        raise RuleError("max_speed_kmh", "must be more than 0 and at most 1000000 (km/h)")
    distance = parse_decimal("min_distance_km", raw.get("min_distance_km", DEFAULT_MIN_DISTANCE_KM))
    if not 0 <= distance <= _HALF_EQUATOR_KM:
        raise RuleError("min_distance_km", f"must be from 0 to {_HALF_EQUATOR_KM} (km)")
    centroids = raw.get("use_centroids", True)
    if not isinstance(centroids, bool):
        raise RuleError("use_centroids", "must be true or false")
    return GeoVelocityRule(
        **common,
        filter=conditions,
        max_speed_kmh=speed,
        min_distance_km=distance,
        use_centroids=centroids,
    )


KINDS[GeoVelocityRule.kind] = (GEO_VELOCITY_KEYS, _parse_geo_velocity_rule)
KINDS[AbsenceRule.kind] = (ABSENCE_KEYS, _parse_absence_rule)

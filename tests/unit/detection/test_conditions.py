"""app.detection.conditions: groups and comparisons between fields, compiled exactly as the
JSON reads (against a plain interpreter, tests/oracle.py), refused naming where."""

from __future__ import annotations

import json
import pickle
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from app.detection.conditions import (
    GROUP_KEYS,
    MAX_CONDITIONS,
    MAX_DEPTH,
    RuleError,
    parse_filter,
)
from app.detection.models import Payment
from app.detection.rules import AggregateRule, parse_rule
from app.rules_admin.topic import load_rule_file
from tests import factories
from tests.docs import first_column, page, section
from tests.factories import rule_body
from tests.oracle import holds

AMOUNT = {"field": "amount", "op": ">=", "value": "500"}
FROM_GB = {"field": "country", "op": "==", "value": "GB"}


@pytest.mark.parametrize(
    ("conditions", "field", "problem"),
    [
        ([{"any": []}], "filter[0].any", "non-empty list"),
        ([{"all": AMOUNT}], "filter[0].all", "non-empty list"),
        ([{"any": [AMOUNT, {"colour": 1}]}], "filter[0].any[1]", "unknown keys ['colour']"),
        ([{"not": [AMOUNT]}], "filter[0].not", "must be an object"),
        ([{"any": [AMOUNT], "field": "amount"}], "filter[0]", "unknown keys ['field']"),
        ([{"not": {"field": "amount", "op": "~", "value": 1}}], "filter[0].not.op", "'~'"),
        (
            [FROM_GB, {"all": [AMOUNT, {"field": "ip", "op": "==", "ref": "colour"}]}],
            "filter[1].all[1].ref",
            "'colour' is not one of",
        ),
        (
            [{"field": "country", "op": "==", "ref": "country"}],
            "filter[0].ref",
            "with itself",
        ),
        (
            [{"field": "country", "op": "==", "ref": "amount"}],
            "filter[0].ref",
            "not both amounts or text",
        ),
        (
            [{"field": "country", "op": "in", "ref": "ip"}],
            "filter[0].op",
            "list value, not a ref",
        ),
        (
            [{"field": "country", "op": "<", "ref": "ip"}],
            "filter[0].op",
            "is a string",
        ),
        (
            [{"field": "country", "op": "==", "ref": "ip", "value": "GB"}],
            "filter[0]",
            "not both",
        ),
    ],
)
def test_bad_conditions_are_refused_naming_where(
    conditions: list[Any], field: str, problem: str
) -> None:
    with pytest.raises(RuleError) as info:
        parse_rule(rule_body(filter=conditions))
    assert info.value.field == field
    assert problem in info.value.problem


def test_a_rule_file_names_the_rule_and_the_nested_condition(tmp_path: Path) -> None:
    """What the CLI prints: the rule's place in the file, then the condition's."""
    path = tmp_path / "rules.yaml"
    bad = rule_body(rule_id="b", filter=[{"any": [{"field": "amount", "op": "=~", "value": 1}]}])
    path.write_text(yaml.safe_dump([rule_body(), bad]))
    with pytest.raises(RuleError) as info:
        load_rule_file(path)
    assert info.value.field == "rule[1].filter[0].any[0].op"


def test_groups_nest_at_most_max_depth_deep() -> None:
    def nested(depth: int) -> dict[str, Any]:
        node: dict[str, Any] = AMOUNT
        for _ in range(depth):
            node = {"not": node}
        return node

    assert parse_filter("filter", [nested(MAX_DEPTH - 1)])
    with pytest.raises(RuleError, match="nest at most"):
        parse_filter("filter", [nested(MAX_DEPTH)])


def test_one_rule_holds_at_most_max_conditions_comparisons() -> None:
    assert parse_filter("filter", [{"any": [AMOUNT] * MAX_CONDITIONS}])
    with pytest.raises(RuleError) as info:
        parse_filter("filter", [FROM_GB, {"any": [AMOUNT] * MAX_CONDITIONS}])
    assert info.value.field == f"filter[1].any[{MAX_CONDITIONS - 1}]"


def test_a_rule_with_groups_round_trips_through_json_and_pickle() -> None:
    conditions = [
        {"any": [AMOUNT, {"not": {"field": "country", "op": "in", "value": ["GB", "US"]}}]},
        {"field": "merchant_id", "op": "!=", "ref": "account_id"},
    ]
    rule = parse_rule(rule_body(filter=conditions))
    assert rule.to_json()["filter"] == conditions
    assert parse_rule(json.loads(rule.to_bytes())) == rule
    copy = pickle.loads(pickle.dumps(rule))
    assert copy == rule
    small_us = factories.payment(amount="10", country="US")
    assert not copy.qualifies(small_us) and not rule.qualifies(small_us)
    assert copy.qualifies(small_us._replace(country="FR"))


# ---------------------------------------------------------------------- against a plain reading

TEXT_FIELDS = ["country", "currency", "merchant_id", "account_id", "ip"]
VALUES = ["GB", "US", "FR", "m1", "m2"]
AMOUNTS = ["0", "1.5", "500", "500.00", "999.99", "1000"]


def comparisons() -> st.SearchStrategy[dict[str, Any]]:
    text = st.fixed_dictionaries(
        {
            "field": st.sampled_from(TEXT_FIELDS),
            "op": st.sampled_from(["==", "!="]),
            "value": st.sampled_from(VALUES),
        }
    )
    members = st.fixed_dictionaries(
        {
            "field": st.sampled_from(TEXT_FIELDS),
            "op": st.sampled_from(["in", "not in"]),
            "value": st.lists(st.sampled_from(VALUES), min_size=1, max_size=3),
        }
    )
    amount = st.fixed_dictionaries(
        {
            "field": st.just("amount"),
            "op": st.sampled_from(["==", "!=", "<", "<=", ">", ">="]),
            "value": st.sampled_from(AMOUNTS),
        }
    )
    two_fields = st.tuples(
        st.sampled_from(TEXT_FIELDS), st.sampled_from(TEXT_FIELDS), st.sampled_from(["==", "!="])
    ).filter(lambda t: t[0] != t[1])
    refs = two_fields.map(lambda t: {"field": t[0], "op": t[2], "ref": t[1]})
    return st.one_of(text, members, amount, refs)


conditions = st.recursive(
    comparisons(),
    lambda inner: st.one_of(
        st.builds(lambda c: {"not": c}, inner),
        st.builds(lambda cs: {"any": cs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda cs: {"all": cs}, st.lists(inner, min_size=1, max_size=3)),
    ),
    max_leaves=12,
)


@st.composite
def payments(draw: st.DrawFn) -> Payment:
    fields: dict[str, Any] = {name: draw(st.sampled_from(VALUES)) for name in TEXT_FIELDS}
    return factories.payment(amount=draw(st.sampled_from(AMOUNTS)), **fields)


def nesting(condition: dict[str, Any]) -> int:
    inner = [v for k, v in condition.items() if k in ("any", "all", "not")]
    if not inner:
        return 0
    children = inner[0] if isinstance(inner[0], list) else [inner[0]]
    return 1 + max(nesting(c) for c in children)


@settings(max_examples=400, deadline=None)
@given(st.lists(conditions, max_size=3), st.lists(payments(), min_size=1, max_size=8))
def test_a_compiled_filter_holds_exactly_when_its_json_reads_so(
    filter_: list[dict[str, Any]], batch: list[Payment]
) -> None:
    if any(nesting(c) >= MAX_DEPTH for c in filter_):
        return
    rule = parse_rule(rule_body(filter=filter_))
    assert isinstance(rule, AggregateRule)
    assert parse_rule(json.loads(rule.to_bytes())) == rule
    for p in batch:
        assert rule.qualifies(p) == all(holds(c, p) for c in filter_)


def test_amounts_compare_exactly_inside_groups() -> None:
    rule = parse_rule(rule_body(filter=[{"not": {"any": [{**AMOUNT, "value": "500.00"}]}}]))
    assert not rule.qualifies(factories.payment(amount=Decimal("500")))
    assert rule.qualifies(factories.payment(amount=Decimal("499.999")))


def test_the_rule_format_page_lists_the_groups_and_the_limits_the_parser_has() -> None:
    rule_format = page("reference/rule-format.md")
    assert first_column(section(rule_format, "Groups")) == list(GROUP_KEYS)
    limits = section(rule_format, "Limits and refusals")
    assert f"| {MAX_CONDITIONS} |" in limits and f"| {MAX_DEPTH} deep |" in limits
    (example,) = [block for block in rule_format.split("```yaml\n") if block.startswith("filter:")]
    conditions = yaml.safe_load(example.split("```")[0])["filter"]
    assert parse_rule(rule_body(filter=conditions)).to_json()["filter"] == conditions

"""app.detection.rules: a bad rule is refused with a message naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.detection.kinds import KIND_OF
from app.detection.rulebook import RuleBook
from app.detection.rules import (
    FILTER_FIELDS,
    FILTER_OPS,
    GROUP_FIELDS,
    KINDS,
    RULE_KEYS,
    SEED_RULE,
    SEVERITIES,
    STATUSES,
    STRING_FIELDS,
    THRESHOLD_OPS,
    AggregateRule,
    RuleError,
    parse_rule,
)
from app.rules_admin.topic import load_rule_file
from tests.docs import REPO, first_column, page, section
from tests.factories import rule_body


@pytest.mark.parametrize(
    ("body", "field", "problem"),
    [
        (rule_body(rule_id="Bad Id!"), "rule_id", "a-z"),
        (rule_body(rule_id=...), "rule_id", "a-z"),
        (rule_body(version=0), "version", ">= 1"),
        (rule_body(version="2"), "version", "integer"),
        (rule_body(status="enabled"), "status", "'enabled' is not one of"),
        (rule_body(group_by=["card_number"]), "group_by", "'card_number'"),
        (rule_body(group_by=[]), "group_by", "non-empty"),
        (rule_body(filter={"amount": 5}), "filter", "list"),
        (
            rule_body(filter=[{"field": "colour", "op": "==", "value": "x"}]),
            "filter[0].field",
            "colour",
        ),
        (rule_body(filter=[{"field": "amount", "op": "~", "value": 1}]), "filter[0].op", "'~'"),
        (
            rule_body(filter=[{"field": "amount", "op": ">=", "value": "lots"}]),
            "filter[0].value",
            "number",
        ),
        (
            rule_body(filter=[{"field": "country", "op": "in", "value": "FR"}]),
            "filter[0].value",
            "list",
        ),
        (
            rule_body(filter=[{"field": "country", "op": ">", "value": "FR"}]),
            "filter[0].op",
            "string",
        ),
        (rule_body(aggregate="avg(amount)"), "aggregate", "count, sum(amount)"),
        (rule_body(aggregate="distinct_count(colour)"), "aggregate", "colour"),
        (rule_body(window=0), "window", "seconds"),
        (rule_body(window=10**9), "window", "seconds"),
        (rule_body(threshold={"op": "<", "value": 3}), "threshold.op", "'<'"),
        (rule_body(threshold={"op": ">=", "value": 0}), "threshold.value", "positive"),
        (rule_body(threshold={"op": ">=", "value": 2.5}), "threshold.value", "whole number"),
        (rule_body(severity="urgent"), "severity", "'urgent'"),
        (rule_body(colour="red"), "colour", "not a rule field"),
        (rule_body(kind="burst"), "kind", "'burst' is not one of"),
        (rule_body(kind=["aggregate"]), "kind", "is not one of"),
        ([1, 2], "rule", "object"),
    ],
)
def test_bad_rules_are_refused_naming_the_field(body: Any, field: str, problem: str) -> None:
    with pytest.raises(RuleError) as info:
        parse_rule(body)
    assert info.value.field == field
    assert problem in str(info.value)
    assert str(info.value).startswith(field)


def test_rule_round_trips_through_json() -> None:
    assert parse_rule(json.loads(SEED_RULE.to_bytes())) == SEED_RULE


def test_a_rule_without_a_kind_is_an_aggregate_rule_written_as_before() -> None:
    """Rules already on the rules topic keep their meaning, and an aggregate rule is
    published without ``kind``, so a worker of a version before kinds still reads it."""
    plain = parse_rule(rule_body())
    assert isinstance(plain, AggregateRule)
    assert parse_rule(rule_body(kind="aggregate")) == plain == SEED_RULE
    assert "kind" not in plain.to_json()
    assert plain.to_bytes() == SEED_RULE.to_bytes()


def test_every_kind_has_an_engine() -> None:
    """The engine finds a rule's kind by the rule's type: every kind the parser makes."""
    for kind, (keys, _) in KINDS.items():
        assert {"rule_id", "version", "kind", "status", "window", "severity"} <= keys, kind
    made = {type(rule) for rule in load_rule_file(REPO / "examples/rules/kinds.yaml")}
    assert {cls.kind for cls in made} == set(KINDS), "the examples show every kind"
    assert made <= set(KIND_OF)


def test_the_workers_refuse_a_rule_of_no_known_kind_and_keep_the_last_good_one() -> None:
    book = RuleBook()
    assert book.apply(b"high-value-burst", SEED_RULE.to_bytes()).startswith("applied")
    bad = json.dumps(rule_body(version=2, kind="burst")).encode()
    assert book.apply(b"high-value-burst", bad) == (
        "poison: kind: 'burst' is not one of " + ", ".join(KINDS)
    )
    assert book.rules["high-value-burst"] == SEED_RULE


def test_a_count_beyond_what_a_key_keeps_is_refused_naming_the_threshold() -> None:
    raw = {**SEED_RULE.to_json(), "threshold": {"op": ">=", "value": 1001}}
    with pytest.raises(RuleError, match=r"threshold.value: must be at most 1000"):
        parse_rule(raw)


# ------------------------------------------------------------- the rule format's page


def rule_format(heading: str) -> list[str]:
    return first_column(section(page("reference/rule-format.md"), heading))


def test_the_rule_format_page_lists_every_field_filter_field_and_operator() -> None:
    assert sorted(rule_format("Fields")) == sorted(RULE_KEYS)
    assert rule_format("Group-by fields") == list(GROUP_FIELDS)
    assert rule_format("Filter") == [*FILTER_FIELDS, *FILTER_OPS]
    assert rule_format("Statuses") == list(STATUSES)
    assert rule_format("Kinds") == list(KINDS)
    aggregates = rule_format("Aggregates")
    assert aggregates == ["count", "sum(amount)", "distinct_count(<field>)"]
    for text in aggregates:
        field = STRING_FIELDS[0] if "<field>" in text else None
        assert parse_rule(rule_body(aggregate=text.replace("<field>", str(field))))
    threshold = section(page("reference/rule-format.md"), "Threshold")
    assert all(f"`{op}`" in threshold for op in THRESHOLD_OPS)
    assert all(f"`{severity}`" in page("reference/rule-format.md") for severity in SEVERITIES)


def test_every_filter_field_and_operator_the_page_allows_validates() -> None:
    """What the operators table says of the fields: numbers take every operator, text only
    equality and membership."""
    for field in FILTER_FIELDS:
        value: Any = "100" if field == "amount" else "GB"
        for op in FILTER_OPS:
            condition = {"field": field, "op": op, "value": [value] if "in" in op else value}
            if field == "amount" or op in ("==", "!=", "in", "not in"):
                assert parse_rule(rule_body(filter=[condition]))
            else:
                with pytest.raises(RuleError, match="is a string"):
                    parse_rule(rule_body(filter=[condition]))


def test_the_rule_examples_the_docs_include_are_valid_rules() -> None:
    (example,) = load_rule_file(REPO / "examples/rules/first-rule.yaml")
    assert example.rule_id == "gb-pair"
    shipped = load_rule_file(REPO / "app/rules_admin/default_rules.yaml")
    format_page = page("reference/rule-format.md")
    assert '--8<-- "examples/rules/first-rule.yaml"' in format_page
    assert '--8<-- "app/rules_admin/default_rules.yaml"' in format_page
    assert rule_format("The shipped rules") == [rule.rule_id for rule in shipped]

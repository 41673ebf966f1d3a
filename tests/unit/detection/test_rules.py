"""app.detection.rules: a bad rule is refused with a message naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.detection.rules import SEED_RULE, RuleError, parse_rule
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


def test_a_count_beyond_what_a_key_keeps_is_refused_naming_the_threshold() -> None:
    raw = {**SEED_RULE.to_json(), "threshold": {"op": ">=", "value": 1001}}
    with pytest.raises(RuleError, match=r"threshold.value: must be at most 1000"):
        parse_rule(raw)

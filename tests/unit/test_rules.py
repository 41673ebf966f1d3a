"""Rule validation messages and the rules-topic fold (versions, tombstones, poison)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.detection import rulebook as rulebook_module
from app.detection.rulebook import RuleBook
from app.detection.rules import SEED_RULE, RuleError, parse_rule
from app.rules_admin.topic import load_rule_file, with_status

SHIPPED_RULES = Path(__file__).resolve().parents[2] / "app" / "rules_admin" / "default_rules.yaml"


def seed(**changes: Any) -> dict[str, Any]:
    body = SEED_RULE.to_json()
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


@pytest.mark.parametrize(
    ("body", "field", "problem"),
    [
        (seed(rule_id="Bad Id!"), "rule_id", "a-z"),
        (seed(rule_id=...), "rule_id", "a-z"),
        (seed(version=0), "version", ">= 1"),
        (seed(version="2"), "version", "integer"),
        (seed(status="enabled"), "status", "'enabled' is not one of"),
        (seed(group_by=["card_number"]), "group_by", "'card_number'"),
        (seed(group_by=[]), "group_by", "non-empty"),
        (seed(filter={"amount": 5}), "filter", "list"),
        (seed(filter=[{"field": "colour", "op": "==", "value": "x"}]), "filter[0].field", "colour"),
        (seed(filter=[{"field": "amount", "op": "~", "value": 1}]), "filter[0].op", "'~'"),
        (
            seed(filter=[{"field": "amount", "op": ">=", "value": "lots"}]),
            "filter[0].value",
            "number",
        ),
        (seed(filter=[{"field": "country", "op": "in", "value": "FR"}]), "filter[0].value", "list"),
        (seed(filter=[{"field": "country", "op": ">", "value": "FR"}]), "filter[0].op", "string"),
        (seed(aggregate="avg(amount)"), "aggregate", "count, sum(amount)"),
        (seed(aggregate="distinct_count(colour)"), "aggregate", "colour"),
        (seed(window=0), "window", "seconds"),
        (seed(window=10**9), "window", "seconds"),
        (seed(threshold={"op": "<", "value": 3}), "threshold.op", "'<'"),
        (seed(threshold={"op": ">=", "value": 0}), "threshold.value", "positive"),
        (seed(threshold={"op": ">=", "value": 2.5}), "threshold.value", "whole number"),
        (seed(severity="urgent"), "severity", "'urgent'"),
        (seed(colour="red"), "colour", "not a rule field"),
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


def record(rule: dict[str, Any]) -> tuple[bytes, bytes]:
    return rule["rule_id"].encode(), json.dumps(rule).encode()


def test_newer_versions_replace_older_ones_never_the_reverse() -> None:
    book = RuleBook()
    book.apply(*record(seed(version=2, severity="low")))
    assert book.rules["high-value-burst"].severity == "low"
    assert book.apply(*record(seed(version=1))).startswith("stale")
    assert book.rules["high-value-burst"].version == 2
    book.apply(*record(seed(version=3, status="paused")))
    assert book.rules["high-value-burst"].status == "paused"
    assert book.other_groups() == []


def test_tombstone_deletes_and_stale_copies_do_not_resurrect() -> None:
    book = RuleBook()
    book.apply(*record(seed(version=4)))
    book.apply(b"high-value-burst", None)
    assert book.rules == {}
    assert book.apply(*record(seed(version=4))).startswith("stale")
    assert book.rules == {}
    book.apply(*record(seed(version=5)))
    assert book.rules["high-value-burst"].version == 5


def test_poison_records_are_counted_and_the_last_good_version_stays() -> None:
    book = RuleBook()
    book.apply(*record(seed(version=1)))
    assert book.apply(b"high-value-burst", b"\x00not json").startswith("poison")
    assert book.apply(*record(seed(version=2, window=-1))).startswith("poison")
    assert book.apply(b"other-id", json.dumps(seed(version=9)).encode()).startswith("poison")
    assert book.poison_records == 3
    assert book.rules["high-value-burst"] == SEED_RULE


def test_records_that_once_froze_the_follower_are_poison_and_never_raise() -> None:
    book = RuleBook(max_rules=2, max_rule_bytes=16_384)
    book.apply(*record(seed(version=1)))
    assert book.apply(b"deep", b"[" * 6000 + b"]" * 6000) == "poison: rule: JSON nested too deeply"
    ips = [f"10.0.{i // 250}.{i % 250}" for i in range(1500)]
    big = json.dumps(seed(rule_id="big", filter=[{"field": "ip", "op": "in", "value": ips}]))
    assert len(big) > 16_384
    assert book.apply(b"big", big.encode()).startswith("poison: rule: is ")
    assert book.apply(*record(seed(rule_id="second"))).startswith("applied")
    assert book.apply(*record(seed(rule_id="third"))) == "poison: too many rules (limit 2)"
    # A rule already in force may still change at the limit.
    assert book.apply(*record(seed(rule_id="second", version=2))).startswith("applied")
    assert book.poison_records == 3
    assert sorted(book.rules) == ["high-value-burst", "second"]


def test_an_unforeseen_error_in_a_record_is_poison_too(monkeypatch: pytest.MonkeyPatch) -> None:
    book = RuleBook()

    def explode(raw: bytes, max_bytes: int) -> object:
        raise ZeroDivisionError

    monkeypatch.setattr(rulebook_module, "parse_rule_bytes", explode)
    assert book.apply(*record(seed())) == "poison: internal error ZeroDivisionError"
    assert book.rules == {} and book.poison_records == 1


def test_rules_index_by_group() -> None:
    book = RuleBook()
    book.apply(*record(seed()))
    device = seed(rule_id="dev", group_by=["device_id", "ip"], aggregate="distinct_count(card_id)")
    book.apply(*record(device))
    assert [r.rule_id for r in book.rules_for(("card_id",))] == ["high-value-burst"]
    assert book.other_groups() == [("device_id", "ip")]


def test_rule_files_hold_one_rule_or_a_list_in_json_or_yaml(tmp_path: Path) -> None:
    single = tmp_path / "one.json"
    single.write_text(json.dumps(seed()))
    assert load_rule_file(single) == [SEED_RULE]
    shipped = load_rule_file(SHIPPED_RULES)
    assert len(shipped) >= 4
    assert {r.aggregate.name for r in shipped} == {"count", "sum", "distinct_count"}
    broken = tmp_path / "broken.yaml"
    broken.write_text("- rule_id: a\n  version: 1\n  window: 5\n  threshold: 2\n- rule_id: b\n")
    with pytest.raises(RuleError) as info:
        load_rule_file(broken)
    assert info.value.field == "rule[1].version"


def test_pause_publishes_the_next_version() -> None:
    body = with_status(SEED_RULE, "paused")
    assert (body["version"], body["status"]) == (2, "paused")

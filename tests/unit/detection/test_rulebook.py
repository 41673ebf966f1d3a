"""app.detection.rulebook: the rules-topic fold (versions, tombstones, poison records)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.detection import rulebook as rulebook_module
from app.detection.keys import split_group_record_key
from app.detection.rulebook import RuleBook
from app.detection.rules import SEED_RULE
from tests import factories
from tests.factories import rule_body


def record(rule: dict[str, Any]) -> tuple[bytes, bytes]:
    return rule["rule_id"].encode(), json.dumps(rule).encode()


def test_newer_versions_replace_older_ones_never_the_reverse() -> None:
    book = RuleBook()
    book.apply(*record(rule_body(version=2, severity="low")))
    assert book.rules["high-value-burst"].severity == "low"
    assert book.apply(*record(rule_body(version=1))).startswith("stale")
    assert book.rules["high-value-burst"].version == 2
    book.apply(*record(rule_body(version=3, status="paused")))
    assert book.rules["high-value-burst"].status == "paused"
    assert book.other_groups() == []


def test_tombstone_deletes_and_stale_copies_do_not_resurrect() -> None:
    book = RuleBook()
    book.apply(*record(rule_body(version=4)))
    book.apply(b"high-value-burst", None)
    assert book.rules == {}
    assert book.apply(*record(rule_body(version=4))).startswith("stale")
    assert book.rules == {}
    book.apply(*record(rule_body(version=5)))
    assert book.rules["high-value-burst"].version == 5


def test_poison_records_are_counted_and_the_last_good_version_stays() -> None:
    book = RuleBook()
    book.apply(*record(rule_body(version=1)))
    assert book.apply(b"high-value-burst", b"\x00not json").startswith("poison")
    assert book.apply(*record(rule_body(version=2, window=-1))).startswith("poison")
    assert book.apply(b"other-id", json.dumps(rule_body(version=9)).encode()).startswith("poison")
    assert book.poison_records == 3
    assert book.rules["high-value-burst"] == SEED_RULE


def test_records_that_once_froze_the_follower_are_poison_and_never_raise() -> None:
    book = RuleBook(max_rules=2, max_rule_bytes=16_384)
    book.apply(*record(rule_body(version=1)))
    assert book.apply(b"deep", b"[" * 6000 + b"]" * 6000) == "poison: rule: JSON nested too deeply"
    ips = [f"10.0.{i // 250}.{i % 250}" for i in range(1500)]
    big = json.dumps(rule_body(rule_id="big", filter=[{"field": "ip", "op": "in", "value": ips}]))
    assert len(big) > 16_384
    assert book.apply(b"big", big.encode()).startswith("poison: rule: is ")
    assert book.apply(*record(rule_body(rule_id="second"))).startswith("applied")
    assert book.apply(*record(rule_body(rule_id="third"))) == "poison: too many rules (limit 2)"
    # A rule already in force may still change at the limit.
    assert book.apply(*record(rule_body(rule_id="second", version=2))).startswith("applied")
    assert book.poison_records == 3
    assert sorted(book.rules) == ["high-value-burst", "second"]


def test_an_unforeseen_error_in_a_record_is_poison_too(monkeypatch: pytest.MonkeyPatch) -> None:
    book = RuleBook()

    def explode(raw: bytes, max_bytes: int) -> object:
        raise ZeroDivisionError

    monkeypatch.setattr(rulebook_module, "parse_rule_bytes", explode)
    assert book.apply(*record(rule_body())) == "poison: internal error ZeroDivisionError"
    assert book.rules == {} and book.poison_records == 1


def test_rules_index_by_group() -> None:
    book = RuleBook()
    book.apply(*record(rule_body()))
    device = rule_body(
        rule_id="dev", group_by=["device_id", "ip"], aggregate="distinct_count(card_id)"
    )
    book.apply(*record(device))
    assert [r.rule_id for r in book.rules_for(("card_id",))] == ["high-value-burst"]
    assert book.other_groups() == [("device_id", "ip")]


def test_a_payment_is_regrouped_only_for_live_rules_it_qualifies_for() -> None:
    book = RuleBook()
    book.apply(*record(rule_body()))
    device = rule_body(
        rule_id="dev", group_by=["device_id", "ip"], aggregate="distinct_count(card_id)"
    )
    book.apply(*record(device))
    big = factories.payment(amount="1500", device_id="d-9", ip="198.51.100.4")
    (record_key,) = book.regroup_keys(big)
    group_by, key = split_group_record_key(record_key.encode())
    assert group_by == ("device_id", "ip")
    assert key == book.rules["dev"].group_key(big)
    assert "d-9" in key and "198.51.100.4" in key
    # Below the rule's amount filter: counted by no device rule, so not forwarded.
    assert book.regroup_keys(factories.payment(amount="10")) == []
    book.apply(*record({**device, "version": device["version"] + 1, "status": "paused"}))
    assert book.regroup_keys(big) == []

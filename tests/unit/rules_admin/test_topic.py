"""app.rules_admin.topic: rule files (JSON or YAML) and the next version a status change
publishes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.detection.rules import SEED_RULE, RuleError
from app.rules_admin.topic import load_rule_file, with_status
from tests.factories import rule_body

SHIPPED_RULES = Path(__file__).resolve().parents[3] / "app" / "rules_admin" / "default_rules.yaml"


def test_rule_files_hold_one_rule_or_a_list_in_json_or_yaml(tmp_path: Path) -> None:
    single = tmp_path / "one.json"
    single.write_text(json.dumps(rule_body()))
    assert load_rule_file(single) == [SEED_RULE]
    shipped = load_rule_file(SHIPPED_RULES)
    assert len(shipped) >= 4
    assert {r.aggregate.name for r in shipped} == {"count", "sum", "distinct_count"}
    broken = tmp_path / "broken.yaml"
    broken.write_text("- rule_id: a\n  version: 1\n  window: 5\n  threshold: 2\n- rule_id: b\n")
    with pytest.raises(RuleError) as info:
        load_rule_file(broken)
    assert info.value.field == "rule[1].version"


def test_an_unparsable_or_undecodable_file_is_refused_in_one_line(tmp_path: Path) -> None:
    garbled = tmp_path / "garbled.yaml"
    garbled.write_text("rule_id: a\nversion: [1\n")
    with pytest.raises(RuleError) as info:
        load_rule_file(garbled)
    assert info.value.field == "file"
    assert "\n" not in str(info.value)
    assert f"{garbled} is neither JSON nor YAML" in str(info.value)
    assert "(line 3, column 1)" in str(info.value)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("description: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(RuleError) as info:
        load_rule_file(latin1)
    assert (info.value.field, info.value.problem) == (
        "file",
        f"{latin1} is not UTF-8 text (byte 16)",
    )


def test_pause_publishes_the_next_version() -> None:
    body = with_status(SEED_RULE, "paused")
    assert (body["version"], body["status"]) == (2, "paused")

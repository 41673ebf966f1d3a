"""The bench's rule files hold what their names and the performance page say they hold: the
shipped default rules, then the example rules of ``examples/rules/kinds.yaml`` they name, made
active. (The every-kind file once lost three kinds unnoticed while the page still quoted it
as every kind.)"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from app.detection.rules import KINDS, Rule
from app.rules_admin.topic import load_rule_file

REPO = Path(__file__).parents[2]
DEFAULT_RULES = load_rule_file(REPO / "app" / "rules_admin" / "default_rules.yaml")
EXAMPLES = {
    rule.rule_id: rule for rule in load_rule_file(REPO / "examples" / "rules" / "kinds.yaml")
}


def active(rule_ids: list[str]) -> list[Rule]:
    return [replace(EXAMPLES[rule_id], status="active") for rule_id in rule_ids]


@pytest.mark.parametrize(
    ("bench_file", "added"),
    [
        ("default_and_every_kind.yaml", list(EXAMPLES)),
        ("default_and_first_seen.yaml", ["new-device-high-value"]),
        ("default_and_history.yaml", ["ten-times-usual-spend"]),
        ("default_and_sequence.yaml", ["testing-then-cash-out", "abroad-risky-burst"]),
        ("default_and_geo_velocity.yaml", ["impossible-travel"]),
        ("default_and_absence.yaml", ["large-payment-unconfirmed"]),
        ("default_and_account_sequence.yaml", ["reset-then-payout"]),
    ],
)
def test_a_bench_rule_file_is_the_default_rules_and_the_examples_it_names(
    bench_file: str, added: list[str]
) -> None:
    assert load_rule_file(REPO / "bench" / bench_file) == DEFAULT_RULES + active(added)


def test_the_every_kind_file_holds_a_rule_of_every_kind() -> None:
    rules = load_rule_file(REPO / "bench" / "default_and_every_kind.yaml")
    assert {rule.kind for rule in rules} == set(KINDS)

"""The rules in force in this worker, indexed by the fields they group by."""

from __future__ import annotations

from decimal import Decimal

from app.rules import SEED_RULE, Rule


class RuleBook:
    def __init__(self, rules: list[Rule] | None = None) -> None:
        self._rules: dict[str, Rule] = {}
        self._by_group: dict[tuple[str, ...], list[Rule]] = {}
        self.high_value_amount = Decimal("1000")
        for rule in rules or []:
            self._rules[rule.rule_id] = rule
        self._reindex()

    def _reindex(self) -> None:
        by_group: dict[tuple[str, ...], list[Rule]] = {}
        for rule in sorted(self._rules.values(), key=lambda r: r.rule_id):
            by_group.setdefault(rule.group_by, []).append(rule)
        self._by_group = by_group

    def rules_for(self, group_by: tuple[str, ...]) -> list[Rule]:
        return self._by_group.get(group_by, [])

    def all(self) -> list[Rule]:
        return sorted(self._rules.values(), key=lambda r: r.rule_id)


rulebook = RuleBook([SEED_RULE])

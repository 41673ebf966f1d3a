"""The rules in force in this worker: the fold of the rules topic.

Every worker reads the whole compacted rules topic itself (no consumer group),
so every worker holds every rule. Records are applied with these semantics:

* a rule replaces the one in force only with a higher ``version``;
* a tombstone (``None`` value) deletes the rule, and remembers the version it
  deleted, so a stale copy of an older version cannot bring it back;
* a record that does not validate (a poison record) is logged, counted and
  ignored: the last good version stays in force. That includes a new rule id
  beyond ``max_rules`` and a record larger than ``max_rule_bytes``; applying a
  record never raises, so no record can stop the follower.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from decimal import Decimal

from app.detection.keys import group_record_key
from app.detection.models import Payment
from app.detection.pan import redact_text_cut
from app.detection.rules import (
    DEFAULT_MAX_RULE_BYTES,
    Rule,
    RuleError,
    check_retention,
    parse_rule_bytes,
)

log = logging.getLogger(__name__)

CARD_GROUP = ("card_id",)


@dataclass
class RuleBook:
    rules: dict[str, Rule] = field(default_factory=dict)
    # The highest version seen per rule id, deleted or not.
    versions: dict[str, int] = field(default_factory=dict)
    poison_records: int = 0
    stale_records: int = 0
    high_value_amount: Decimal = Decimal("1000")
    max_rules: int = 100
    max_rule_bytes: int = DEFAULT_MAX_RULE_BYTES
    # The state retention and the allowed lateness (FRAUD_STATE_RETENTION and
    # FRAUD_ALLOWED_LATENESS): a rule whose window and the lateness exceed the retention is a
    # poison record. None: no limit beyond the rule format's.
    state_retention_ms: int | None = None
    allowed_lateness_ms: int = 0
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    # Until ``loaded``: per rules-topic partition not yet read to the end offset it had at
    # start, (consumer position, that end offset); what /readyz shows while it waits.
    unread: dict[int, tuple[int, int]] = field(default_factory=dict)
    # When the version in force of each rule was published (the rules record's Kafka
    # timestamp, epoch ms): a shadow rule's live alerts count from then.
    published_ms: dict[str, int] = field(default_factory=dict)
    _by_group: dict[tuple[str, ...], list[Rule]] = field(default_factory=dict)
    # Per group-by other than the card with a live rule: its live rules (every payment asks).
    _regroup: list[tuple[tuple[str, ...], list[Rule]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._reindex()

    def _reindex(self) -> None:
        by_group: dict[tuple[str, ...], list[Rule]] = {}
        for rule in sorted(self.rules.values(), key=lambda r: r.rule_id):
            by_group.setdefault(rule.group_by, []).append(rule)
        self._by_group = by_group
        live_by_group = [
            (group, [rule for rule in rules if rule.status != "paused"])
            for group, rules in by_group.items()
            if group != CARD_GROUP
        ]
        self._regroup = [(group, live) for group, live in live_by_group if live]

    def apply(self, key: bytes | None, value: bytes | None) -> str:
        """Apply one rules-topic record; returns what happened (for logs and tests).

        Never raises: an unforeseen error is a poison record like any other.
        """
        try:
            return self._apply(key, value)
        except Exception as exc:
            self.poison_records += 1
            log.exception("ignored rules record %r: %s", redact_text_cut(repr(key), slice(80)), exc)
            return f"poison: internal error {type(exc).__name__}"

    def _apply(self, key: bytes | None, value: bytes | None) -> str:
        rule_id = key.decode(errors="replace") if key else ""
        if value is None:
            if not rule_id:
                self.poison_records += 1
                return "poison: tombstone without a key"
            removed = self.rules.pop(rule_id, None)
            if removed is not None:
                self.versions[rule_id] = max(self.versions.get(rule_id, 0), removed.version)
                self._reindex()
            return f"deleted {rule_id}"
        try:
            rule = parse_rule_bytes(value, self.max_rule_bytes)
            if self.state_retention_ms is not None:
                check_retention(rule, self.state_retention_ms, self.allowed_lateness_ms)
        except RuleError as exc:
            self.poison_records += 1
            log.warning("ignored invalid rule record %r: %s", rule_id[:80], exc)
            return f"poison: {exc}"
        if rule_id and rule_id != rule.rule_id:
            self.poison_records += 1
            log.warning("ignored rule record keyed %r holding rule %r", rule_id, rule.rule_id)
            return "poison: key does not match rule_id"
        known = self.versions.get(rule.rule_id, 0)
        if rule.version <= known and not (
            rule.version == known and self.rules.get(rule.rule_id) == rule
        ):
            self.stale_records += 1
            return f"stale: {rule.rule_id} v{rule.version} <= v{known}"
        if rule.rule_id not in self.rules and len(self.rules) >= self.max_rules:
            self.poison_records += 1
            log.warning(
                "ignored rule %r: %d rules are in force, the limit (FRAUD_MAX_RULES)",
                rule.rule_id,
                self.max_rules,
            )
            return f"poison: too many rules (limit {self.max_rules})"
        self.rules[rule.rule_id] = rule
        self.versions[rule.rule_id] = rule.version
        self._reindex()
        return f"applied {rule.rule_id} v{rule.version} ({rule.status})"

    def rules_for(self, group_by: tuple[str, ...]) -> list[Rule]:
        return self._by_group.get(group_by, [])

    def other_groups(self) -> list[tuple[str, ...]]:
        """Group-bys other than the card that some live (non-paused) rule uses."""
        return [group for group, _ in self._regroup]

    def regroup_keys(self, payment: Payment) -> list[str]:
        """Repartition-topic keys of the payment for every other group-by that one of its
        live rules would count it in (the card's own rules need no repartitioning)."""
        keys = []
        for group_by, live in self._regroup:
            for rule in live:
                if rule.qualifies(payment):
                    keys.append(group_record_key(group_by, rule.group_key(payment)))
                    break
        return keys

    def all(self) -> list[Rule]:
        return sorted(self.rules.values(), key=lambda r: r.rule_id)


rulebook = RuleBook()

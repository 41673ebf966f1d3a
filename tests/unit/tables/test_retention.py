"""A key's state outlives its last write by the state retention (FRAUD_STATE_RETENTION):
the changelogs' retention and the local stores' sweep follow it, so a card quiet for most
of a 60-day window keeps its history."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from app.detection.engine import KeyState, evaluate
from app.detection.rulebook import RuleBook
from app.detection.rules import HistoryRule, parse_rule
from app.worker.settings import load_settings, state_retention_ms
from tables.sweep import expired, state_written_ms
from tests import factories

DAY_MS = 24 * 3600 * 1000
NOW_MS = 1_800_000_000_000
LONG_RULES = Path(__file__).resolve().parents[3] / "examples" / "rules" / "long-history.yaml"
SIXTY_DAYS = next(
    rule for rule in yaml.safe_load(LONG_RULES.read_text()) if rule["kind"] == "history"
)
KEY = SIXTY_DAYS["rule_id"].encode()


def test_a_card_quiet_for_59_days_keeps_its_sixty_day_history() -> None:
    """With a retention of 61 days the rule is in force, the card's state written 59 days
    ago is not swept (nor, by the same retention, compacted away from its changelog), and
    the card's next payment is judged against the payments of 59 days ago."""
    settings = load_settings({"FRAUD_STATE_RETENTION": str(61 * 24 * 3600)})
    book = RuleBook(
        state_retention_ms=state_retention_ms(settings),
        allowed_lateness_ms=int(settings.allowed_lateness_s * 1000),
    )
    assert book.apply(KEY, json.dumps(SIXTY_DAYS).encode()).startswith("applied")
    (rule,) = book.all()
    assert isinstance(rule, HistoryRule)
    state = KeyState()
    start = NOW_MS - 59 * DAY_MS
    for i in range(5):
        p = factories.payment("c1", f"t{i}", "40", start + i * 60_000)
        evaluate(state, p, "c1", [rule], 60_000, 0, 0)
    state.written_ms = start + 240_000
    raw = json.dumps(state.to_json()).encode()
    assert not expired(raw, state_written_ms, NOW_MS - state_retention_ms(settings))
    stored = KeyState.from_json(json.loads(raw))
    big = factories.payment("c1", "t9", "500", NOW_MS)
    (alert,) = evaluate(stored, big, "c1", [rule], 60_000, 0, 0).alerts
    assert dict(alert.explanation)["earlier_payments"] == "5"


def test_by_default_a_rule_the_retention_cannot_keep_is_refused_naming_the_window() -> None:
    settings = load_settings({})
    assert state_retention_ms(settings) == (7 + 1) * DAY_MS + 60_000  # as before the setting
    book = RuleBook(state_retention_ms=state_retention_ms(settings), allowed_lateness_ms=60_000)
    outcome = book.apply(KEY, json.dumps(SIXTY_DAYS).encode())
    assert outcome.startswith("poison: window:") and "FRAUD_STATE_RETENTION" in outcome
    assert book.poison_records == 1 and not book.rules
    # Within the default: a 7-day history rule is in force.
    week = {**SIXTY_DAYS, "window": 7 * 24 * 3600}
    assert book.apply(KEY, json.dumps(week).encode()).startswith("applied")
    assert parse_rule(SIXTY_DAYS).window_ms == 60 * DAY_MS  # the format itself allows it


def test_the_changelogs_are_created_with_the_retention_the_setting_says() -> None:
    env = {**os.environ, "FRAUD_STATE_RETENTION": str(61 * 24 * 3600)}
    out = subprocess.run(
        [sys.executable, "-c", "import tables; print(tables.STATE_TOPIC_CONFIGS['retention.ms'])"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[-1]
    assert out == str(61 * DAY_MS)

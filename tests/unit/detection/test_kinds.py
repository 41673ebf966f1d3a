"""What every rule kind shares, checked on the example rule of each
(examples/rules/kinds.yaml)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from app.delivery.published import PublishedAlerts
from app.detection.engine import KeyState, evaluate
from app.detection.kinds import KIND_OF
from app.detection.rules import Rule
from app.rules_admin.topic import load_rule_file
from tests import factories
from tests.docs import REPO
from tests.unit.detection.streams import BASE_MS, LATENESS_MS

EXAMPLES = [replace(r, status="active") for r in load_rule_file(REPO / "examples/rules/kinds.yaml")]


@pytest.mark.parametrize("rule", EXAMPLES, ids=lambda r: r.kind)
def test_a_payment_a_published_alert_used_is_a_redelivery_after_a_replay(rule: Rule) -> None:
    """A replay may start from a key state that lost what a published alert used
    (app.delivery.published tops it up with a plain rule state): that payment is a
    redelivery, never in a second alert, and the state becomes the kind's own."""
    published = PublishedAlerts()
    published.record("a1", (rule.rule_id, "c1"), ("t1",), BASE_MS)
    state = KeyState()
    published.mark_used(state, "c1", [rule])
    # At a terminal (a geo-velocity rule compares positions); a password reset for the rule
    # across event types, whose first step it is.
    where: dict[str, Any] = {"lat": 51.5072, "lon": -0.1276}
    if rule.rule_id == "reset-then-payout":
        where["type"] = "password_reset"
    earlier = factories.payment("c1", "t0", "1.00", BASE_MS - 1_000, device_id="phone", **where)
    used = factories.payment("c1", "t1", "900", BASE_MS, device_id="laptop", mcc="7995", **where)
    assert rule.qualifies(used)
    verdicts = [evaluate(state, p, "c1", [rule], LATENESS_MS, 0, 0) for p in (earlier, used)]
    assert [v.alerts for v in verdicts] == [(), ()] and verdicts[1].duplicate
    kind_state = KIND_OF[type(rule)].state(rule, None)
    assert type(state.rules[rule.rule_id]) is type(kind_state)

"""lambdas/notifier/logic/blocks.py: the Slack message (Block Kit and fallback text)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from lambdas.notifier.logic.blocks import (
    CaseTally,
    build_blocks,
    card_url,
    escape_mrkdwn,
    fallback_text,
    slack_time,
    summarize,
)
from lambdas.notifier.models.alert import Alert, alert_from_image
from tests.factories import alert_image


def make_alert(**overrides: Any) -> Alert:
    return alert_from_image(alert_image(**overrides))


def _all_text(blocks: list[dict[str, Any]]) -> str:
    return json.dumps(blocks, ensure_ascii=False)


def test_blocks_show_rule_severity_card_amounts_countries_times_and_link() -> None:
    blocks = build_blocks(make_alert(), "https://fraud.example.com/")
    text = _all_text(blocks)
    assert blocks[0]["type"] == "header"
    assert "high-value-burst" in blocks[0]["text"]["text"]
    assert "HIGH" in blocks[0]["text"]["text"]
    for expected in (
        "`tok_4242`",
        "1000.00, 1500, 2500.50",
        "FR, GB",
        "v3",
        ":large_orange_circle:",
    ):
        assert expected in text
    # Times: a Slack date token with the UTC time as fallback (offsets converted).
    assert "2026-11-28 14:03:07 UTC" in text
    assert "2026-11-28 13:05:07 UTC" in text
    assert "<!date^" in text
    buttons = [e for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert [b["url"] for b in buttons] == ["https://fraud.example.com/cards/tok_4242"]


def test_block_kit_limits_hold() -> None:
    alert = make_alert(rule_id={"S": "r" * 400}, group_key={"S": "k" * 3000})
    blocks = build_blocks(alert, "https://fraud.example.com")
    assert len(blocks[0]["text"]["text"]) <= 150
    section = blocks[1]
    assert len(section["fields"]) <= 10
    assert all(len(f["text"]) <= 2000 for f in section["fields"])
    # The card link would exceed Slack's 3000-char URL limit: no button rather than a 400.
    assert all(b["type"] != "actions" for b in blocks)


def test_card_link_is_url_encoded_and_only_for_card_keyed_alerts() -> None:
    odd = make_alert(group_key={"S": "tok/../a b?c"})
    assert card_url("http://x", odd) == "http://x/cards/tok%2F..%2Fa%20b%3Fc"
    merchant = make_alert(group_by={"S": "merchant_id"}, group_key={"S": "m-1"})
    assert card_url("http://x", merchant) is None
    assert "*merchant_id*" in _all_text(build_blocks(merchant, "http://x"))
    assert card_url(None, make_alert()) is None
    assert all(b["type"] != "actions" for b in build_blocks(make_alert(), None))


def _mrkdwn_texts(blocks: list[dict[str, Any]]) -> str:
    texts: list[str] = []
    for block in blocks:
        for part in [block.get("text"), *block.get("fields", []), *block.get("elements", [])]:
            if isinstance(part, dict) and part.get("type") == "mrkdwn":
                texts.append(part["text"])
    return "\n".join(texts)


def test_user_controlled_text_cannot_ping_or_link() -> None:
    alert = make_alert(rule_id={"S": "<!channel> & <http://evil|x>"})
    # plain_text (the header) is never parsed by Slack; mrkdwn and the fallback are.
    text = _mrkdwn_texts(build_blocks(alert, None)) + fallback_text(alert)
    assert "<!channel>" not in text
    assert "<http://evil" not in text
    assert "&lt;!channel&gt; &amp; &lt;http://evil|x&gt;" in text


def test_long_amount_lists_are_summarized() -> None:
    alert = make_alert(amounts={"L": [{"S": str(1000 + i)} for i in range(25)]})
    text = _all_text(build_blocks(alert, None))
    assert "1009 … (+15 more)" in text
    assert "1010" not in text


def test_fallback_text_is_one_informative_line() -> None:
    text = fallback_text(make_alert())
    assert "\n" not in text
    for expected in ("[HIGH]", "high-value-burst", "tok_4242", "3 txns", "1000.00", "FR, GB"):
        assert expected in text


def test_slack_time_handles_zones_and_garbage() -> None:
    assert "|2026-11-28 14:03:07 UTC>" in slack_time("2026-11-28T14:03:07Z")
    assert "|2026-11-28 14:03:07 UTC>" in slack_time("2026-11-28T14:03:07")  # naive = UTC
    assert slack_time("yesterday <b>") == "yesterday &lt;b&gt;"
    assert slack_time("") == "-"


@given(st.text())
def test_escaped_text_never_contains_angle_brackets(text: str) -> None:
    escaped = escape_mrkdwn(text)
    assert "<" not in escaped
    assert ">" not in escaped


def test_summarize() -> None:
    assert summarize(()) == "-"
    assert summarize(("a", "b"), limit=2) == "a, b"
    assert summarize(("a", "b", "c"), limit=2) == "a, b … (+1 more)"


def test_a_case_alert_names_its_case_and_links_to_it_in_the_dashboard() -> None:
    alert = make_alert(case_id={"S": "0a1b2c3d4e5f60718293a4b5"}, case_role={"S": "opened"})
    blocks = build_blocks(alert, "https://fraud.example.com")
    buttons = [e for b in blocks if b["type"] == "actions" for e in b["elements"]]
    # Fraud / not fraud are pressed (their value names the case, lambdas/slack_actions
    # closes it); the other two are links.
    assert [(b["action_id"], b.get("value"), b.get("url")) for b in buttons] == [
        ("case_fraud", "0a1b2c3d4e5f60718293a4b5", None),
        ("case_not_fraud", "0a1b2c3d4e5f60718293a4b5", None),
        ("open_case", None, "https://fraud.example.com/#case=0a1b2c3d4e5f60718293a4b5"),
        ("inspect_card", None, "https://fraud.example.com/cards/tok_4242"),
    ]
    assert [b["text"]["text"] for b in buttons] == [
        "Fraud",
        "Not fraud",
        "Open in dashboard",
        "Inspect card",
    ]
    assert "case `0a1b2c3d4e5f60718293a4b5`" in _all_text(blocks)
    assert "· case 0a1b2c3d4e5f60718293a4b5 · alert al-7f3a" in fallback_text(alert)


def test_an_alert_of_another_kind_says_why_it_fired() -> None:
    first_seen = make_alert(
        kind={"S": "first_seen"},
        explanation={"M": {"field": {"S": "country"}, "value": {"S": "BR"}}},
    )
    blocks = build_blocks(first_seen, None)
    assert blocks[2]["text"]["text"] == "*Why* (first_seen)\nfield country, value BR"
    assert "why: field country, value BR" in fallback_text(first_seen)
    sequence = make_alert(kind={"S": "sequence"}, steps={"L": [{"N": "1"}, {"N": "2"}]})
    assert "step 1: t1, step 2: t2" in _all_text(build_blocks(sequence, None))
    # An aggregate's alert has nothing to explain beyond its fields.
    assert "*Why*" not in _all_text(build_blocks(make_alert(), None))


def test_an_updated_case_message_counts_the_alerts_of_its_case() -> None:
    alert = make_alert(case_id={"S": "0a1b2c3d4e5f60718293a4b5"}, case_role={"S": "joined"})
    blocks = build_blocks(alert, None, CaseTally(3, 9, "2026-11-28T14:00:00.000Z"))
    assert blocks[0]["text"]["text"].endswith("(3 alerts)")
    assert "3 alerts, 9 payments" in _all_text(blocks)
    assert "(3 alerts)" not in _all_text(build_blocks(alert, None))

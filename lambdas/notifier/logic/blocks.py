"""Alert -> Slack message (Block Kit blocks plus the plain-text fallback). Pure functions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from lambdas.notifier.models.alert import Alert

SEVERITY_EMOJI = {
    "low": ":large_blue_circle:",
    "medium": ":large_yellow_circle:",
    "high": ":large_orange_circle:",
    "critical": ":red_circle:",
}

# Slack's limits: header text 150 chars, a section field 2000 chars, a button URL 3000.
_HEADER_MAX = 150
_FIELD_MAX = 2000
_URL_MAX = 3000
# A rule with a threshold of hundreds would otherwise produce an unreadable wall of
# numbers; the full list is in the SNS message and the alert row.
_LIST_MAX = 10


def escape_mrkdwn(text: str) -> str:
    """Escape the three characters Slack's mrkdwn gives meaning to (``<@U..>``, links)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summarize(items: tuple[str, ...], limit: int = _LIST_MAX) -> str:
    """``"a, b, c"``, or the first ``limit`` items and ``… (+N more)``; ``"-"`` when empty."""
    if not items:
        return "-"
    shown = ", ".join(items[:limit])
    extra = len(items) - limit
    return f"{shown} … (+{extra} more)" if extra > 0 else shown


def distinct(items: tuple[str, ...]) -> tuple[str, ...]:
    """Items in first-seen order without repeats (one country per payment is repetitive)."""
    return tuple(dict.fromkeys(items))


def parse_ts(text: str) -> datetime | None:
    """An ISO 8601 timestamp as an aware datetime (naive means UTC), or None if unparseable."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def slack_time(text: str) -> str:
    """Slack date token, shown in each reader's own time zone; falls back to the ISO text.

    An unparseable value is shown as sent (escaped): a strange timestamp is still a clue.
    """
    parsed = parse_ts(text)
    if parsed is None:
        return escape_mrkdwn(text) if text else "-"
    fallback = parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"<!date^{int(parsed.timestamp())}^{{date_short_pretty}} {{time_secs}}|{fallback}>"


def card_url(base_url: str | None, alert: Alert) -> str | None:
    """``{base}/cards/{card}`` for card-keyed alerts, None otherwise or without a base URL."""
    if not base_url or alert.group_by != "card_id":
        return None
    url = f"{base_url.rstrip('/')}/cards/{quote(alert.group_key, safe='')}"
    return url if len(url) <= _URL_MAX else None


def case_url(base_url: str | None, alert: Alert) -> str | None:
    """The dashboard's view of the alert's case, None without a case or a base URL."""
    if not base_url or not alert.case_id:
        return None
    url = f"{base_url.rstrip('/')}/#case={quote(alert.case_id, safe='')}"
    return url if len(url) <= _URL_MAX else None


@dataclass(frozen=True)
class CaseTally:
    """What a case holds so far, shown when a later alert updates its message."""

    alert_count: int
    txn_count: int
    opened_at: str


def explain(alert: Alert) -> str:
    """Why an alert of a kind other than an aggregate fired: the step each payment
    matched, or its kind's facts (a first-seen field and value, ...); empty otherwise."""
    if alert.steps:
        return ", ".join(
            f"step {step}: {txn}" for step, txn in zip(alert.steps, alert.txn_ids, strict=False)
        )
    return ", ".join(f"{name} {value}" for name, value in alert.explanation)


def _key_label(alert: Alert) -> str:
    return "Card" if alert.group_by == "card_id" else alert.group_by


def fallback_text(alert: Alert) -> str:
    """One line for notifications, screen readers and clients without Block Kit."""
    parts = [
        f"[{alert.severity.upper()}] {alert.rule_id} v{alert.rule_version}",
        f"{alert.group_by} {alert.group_key}",
        f"{len(alert.txn_ids)} txn{'s' if len(alert.txn_ids) != 1 else ''}"
        if alert.txn_ids
        else "",
        f"amounts {summarize(alert.amounts)}" if alert.amounts else "",
        f"countries {summarize(distinct(alert.countries))}" if alert.countries else "",
        f"at {alert.last_event_ts}" if alert.last_event_ts else "",
        f"why: {explain(alert)}" if explain(alert) else "",
        f"case {alert.case_id}" if alert.case_id else "",
        f"alert {alert.alert_id}",
    ]
    return escape_mrkdwn(" · ".join(p for p in parts if p))


def build_blocks(
    alert: Alert, inspect_base_url: str | None, tally: CaseTally | None = None
) -> list[dict[str, Any]]:
    """Block Kit blocks for a new active alert; with ``tally``, for the latest alert of
    its case (the message updated in place)."""
    emoji = SEVERITY_EMOJI.get(alert.severity, ":white_circle:")
    header = f"{alert.severity.upper()} fraud alert: {alert.rule_id}"
    if tally is not None and tally.alert_count > 1:
        header += f" ({tally.alert_count} alerts)"
    header = _truncate(header, _HEADER_MAX)
    fields = [
        f"*Rule*\n`{escape_mrkdwn(alert.rule_id)}` v{alert.rule_version}",
        f"*Severity*\n{emoji} {escape_mrkdwn(alert.severity)}",
        f"*{escape_mrkdwn(_key_label(alert))}*\n`{escape_mrkdwn(alert.group_key)}`",
        f"*Aggregate*\n{escape_mrkdwn(alert.aggregate_value or '-')}",
        f"*Amounts*\n{escape_mrkdwn(summarize(alert.amounts))}",
        f"*Countries*\n{escape_mrkdwn(summarize(distinct(alert.countries)))}",
        f"*First event*\n{slack_time(alert.first_event_ts)}",
        f"*Last event*\n{slack_time(alert.last_event_ts)}",
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": _truncate(field, _FIELD_MAX)} for field in fields
            ],
        },
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": _truncate(
                        f"Detected {slack_time(alert.detected_at)} · "
                        + (f"case `{escape_mrkdwn(alert.case_id)}` · " if alert.case_id else "")
                        + "alert "
                        f"`{escape_mrkdwn(alert.alert_id)}` · txns "
                        f"{escape_mrkdwn(summarize(alert.txn_ids))}",
                        _FIELD_MAX,
                    ),
                }
            ],
        },
    ]
    why = explain(alert)
    if why:
        blocks.insert(
            2,
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": _truncate(
                        f"*Why* ({escape_mrkdwn(alert.kind)})\n{escape_mrkdwn(why)}", _FIELD_MAX
                    ),
                },
            },
        )
    if tally is not None and tally.alert_count > 1:
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"Case open since {slack_time(tally.opened_at)}:"
                        f" {tally.alert_count} alerts, {tally.txn_count} payments;"
                        " this is its latest alert",
                    }
                ],
            }
        )
    buttons: list[dict[str, Any]] = []
    if alert.case_id:
        # Interactive: Slack sends the press to the app's interactivity URL
        # (lambdas/slack_actions), which closes the case with this disposition.
        buttons += [
            {
                "type": "button",
                "action_id": action_id,
                "text": {"type": "plain_text", "text": text},
                "value": alert.case_id,
                **({"style": style} if style else {}),
            }
            for action_id, text, style in (
                ("case_fraud", "Fraud", "danger"),
                ("case_not_fraud", "Not fraud", None),
            )
        ]
    buttons += [
        {
            "type": "button",
            "action_id": action_id,
            "text": {"type": "plain_text", "text": text},
            "url": url,
        }
        for action_id, text, url in (
            ("open_case", "Open in dashboard", case_url(inspect_base_url, alert)),
            ("inspect_card", "Inspect card", card_url(inspect_base_url, alert)),
        )
        if url is not None
    ]
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
    return blocks

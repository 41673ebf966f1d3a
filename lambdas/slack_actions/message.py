"""A Slack interaction payload -> what to do, and the message that says it was done.
Pure functions: no I/O.

The alert message's buttons (``lambdas.notifier.logic.blocks``) carry the case id as
their value; ``case_fraud`` and ``case_not_fraud`` close it, ``open_case`` is a link
(Slack still sends a request for it, which is answered and otherwise ignored).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from lambdas.notifier.logic.blocks import escape_mrkdwn

CLOSE_ACTIONS = {"case_fraud": "fraud", "case_not_fraud": "not_fraud"}
OPEN_ACTION = "open_case"
CASE_ID = re.compile(r"[0-9a-f]{24}")
MAX_NAME_CHARS = 80


class BadPayload(ValueError):
    """A signed request whose payload is not a button press this handler knows."""


@dataclass(frozen=True)
class Closing:
    case_id: str
    disposition: str
    closed_by: str
    note: str
    response_url: str
    blocks: tuple[dict[str, Any], ...]


def parse(body: str) -> Closing | None:
    """The close a button asks for; None for a press that closes nothing (the link)."""
    form = parse_qs(body, keep_blank_values=True)
    raw = form.get("payload", [""])[0]
    try:
        payload = json.loads(raw)
    except json.JSONDecodeError:
        raise BadPayload("payload: not JSON") from None
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        raise BadPayload("payload: not a block_actions interaction")
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        raise BadPayload("payload.actions: missing")
    action = actions[0]
    action_id = action.get("action_id")
    if action_id == OPEN_ACTION:
        return None
    disposition = CLOSE_ACTIONS.get(str(action_id))
    if disposition is None:
        raise BadPayload(f"payload.actions[0].action_id: unknown ({str(action_id)[:40]!r})")
    case_id = action.get("value")
    if not isinstance(case_id, str) or not CASE_ID.fullmatch(case_id):
        raise BadPayload("payload.actions[0].value: not a case id")
    response_url = payload.get("response_url")
    if not isinstance(response_url, str) or not response_url:
        raise BadPayload("payload.response_url: missing")
    user = payload.get("user") if isinstance(payload.get("user"), dict) else {}
    assert isinstance(user, dict)
    name = str(user.get("username") or user.get("name") or user.get("id") or "unknown")
    message = payload.get("message") if isinstance(payload.get("message"), dict) else {}
    assert isinstance(message, dict)
    blocks = message.get("blocks")
    return Closing(
        case_id=case_id,
        disposition=disposition,
        closed_by=f"slack:{name[:MAX_NAME_CHARS]}",
        note=f"{disposition} (Slack button, by {name[:MAX_NAME_CHARS]})",
        response_url=response_url,
        blocks=tuple(b for b in blocks if isinstance(b, dict)) if isinstance(blocks, list) else (),
    )


def closed_message(closing: Closing, case: dict[str, Any]) -> dict[str, Any]:
    """The alert message as it was, without its buttons, saying how the case closed."""
    kept = [block for block in closing.blocks if block.get("type") != "actions"]
    line = (
        f":white_check_mark: Case `{escape_mrkdwn(closing.case_id)}` closed as"
        f" *{escape_mrkdwn(str(case.get('disposition')))}* by"
        f" {escape_mrkdwn(str(case.get('closed_by')))}"
        f" at {escape_mrkdwn(str(case.get('closed_at')))}"
    )
    return {
        "replace_original": True,
        "text": f"Case {closing.case_id} closed as {case.get('disposition')}",
        "blocks": [*kept, {"type": "context", "elements": [{"type": "mrkdwn", "text": line}]}],
    }


def refusal_message(closing: Closing, problem: str) -> dict[str, Any]:
    """Said to the one who pressed (ephemeral), the message unchanged."""
    return {
        "response_type": "ephemeral",
        "replace_original": False,
        "text": f"Case {closing.case_id} not closed: {problem}",
    }

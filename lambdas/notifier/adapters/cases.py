"""The case's Slack message, kept on its row of the cases table (app.cases): which
channel and ts the opening alert's post got, and how many alerts the message shows.

Every write is conditional: the message is remembered once (a redelivered opening alert
finds it there), and an update claims its alert count first, so an update computed from
an older state of the case never overwrites a newer one's claim.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

CONDITION_FAILED = "ConditionalCheckFailedException"


def _key(case_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"case#{case_id}"}}


def _failed_condition(exc: ClientError) -> bool:
    return bool(exc.response.get("Error", {}).get("Code") == CONDITION_FAILED)


class CaseMessages:
    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    def get(self, case_id: str) -> dict[str, Any] | None:
        item: dict[str, Any] | None = self.client.get_item(
            TableName=self.table, Key=_key(case_id), ConsistentRead=True
        ).get("Item")
        return item

    def remember(self, case_id: str, channel: str, ts: str) -> dict[str, Any] | None:
        """Keep the opening post's channel and ts on the case; the case as it is now, or
        None when it had a message already (a redelivery) or does not exist."""
        try:
            answer = self.client.update_item(
                TableName=self.table,
                Key=_key(case_id),
                UpdateExpression="SET slack_channel = :channel, slack_ts = :ts, slack_shown = :one",
                ConditionExpression="attribute_exists(pk) AND attribute_not_exists(slack_ts)",
                ExpressionAttributeValues={
                    ":channel": {"S": channel},
                    ":ts": {"S": ts},
                    ":one": {"N": "1"},
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _failed_condition(exc):
                return None
            raise
        item: dict[str, Any] = answer["Attributes"]
        return item

    def claim(self, case_id: str, alert_count: int) -> bool:
        """The right to show ``alert_count`` alerts: False when the message shows as many
        or more already (another update won) or the case is closed."""
        try:
            self.client.update_item(
                TableName=self.table,
                Key=_key(case_id),
                UpdateExpression="SET slack_shown = :n",
                ConditionExpression="attribute_exists(slack_ts) AND #status = :open"
                " AND slack_shown < :n",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={":n": {"N": str(alert_count)}, ":open": {"S": "open"}},
            )
        except ClientError as exc:
            if _failed_condition(exc):
                return False
            raise
        return True


def number(item: dict[str, Any], name: str) -> int:
    value = item.get(name) or {}
    try:
        return int(value.get("N", value.get("S", 0)))
    except (TypeError, ValueError):
        return 0


def text(item: dict[str, Any], name: str) -> str:
    value = item.get(name) or {}
    found = value.get("S")
    return found if isinstance(found, str) else ""


def release(messages: CaseMessages, case_id: str, alert_count: int) -> None:
    """Give back a claim whose update failed, so the retry may claim it again (unless a
    newer update claimed the message meanwhile)."""
    try:
        messages.client.update_item(
            TableName=messages.table,
            Key=_key(case_id),
            UpdateExpression="SET slack_shown = :before",
            ConditionExpression="slack_shown = :n",
            ExpressionAttributeValues={
                ":n": {"N": str(alert_count)},
                ":before": {"N": str(alert_count - 1)},
            },
        )
    except ClientError as exc:
        if not _failed_condition(exc):
            raise

"""The cases table: an alert grouped into a case in the same transaction as its row, cases
listed, shown and closed. Synchronous boto3 (the sink calls it from its write threads, the
API and the CLI from a thread).

Grouping is effectively-once, like the alert rows. An alert's row, its membership item
(``alert#<alert_id>``: which case it went to) and the case change it makes (open: the case
and its slot; join: the case's counts) are one ``TransactWriteItems``, each put conditional
on the item not existing. So a replay (the same alert again: at-least-once delivery, a
restarted worker) fails the row's condition and changes nothing, not even a count, and a
crash between two writes cannot happen: all of them land or none. A replay after the row's
24 h TTL finds the membership item instead and writes the row again as ``replayed``
(no page, no second case). The case an alert opens has an id derived from that alert, so no
replay of it can name another case.

Two alerts of one rule on one key written at once (two sink workers) race for the slot: the
loser's transaction fails the slot's condition and is tried again as a join. A join that
finds its case closed meanwhile is tried again as an opening.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from botocore.exceptions import ClientError, EndpointConnectionError

from app.cases.model import (
    CLOSED,
    OPEN,
    STATUS_INDEX,
    STATUSES,
    Case,
    CaseError,
    CaseFilter,
    Closing,
    RaceLostError,
    Role,
    case_id_for,
    case_key,
    join_update,
    membership_key,
    opened_item,
    slot_of,
)
from app.delivery.dynamodb import alert_item, error_code
from app.detection.models import Alert

CONDITION_NEW = "attribute_not_exists(pk)"
CONDITION_NEW_ALERT = "attribute_not_exists(alert_id)"
CONDITION_FAILED = "ConditionalCheckFailed"
# A slot lost to another writer, or a case closed under a join: tried again at once, this
# many times, before the alert is handed back to the writer's retry rounds.
RACE_ATTEMPTS = 5


def cancellation_codes(exc: ClientError) -> list[str]:
    """The per-item codes of a cancelled transaction ("None" for an item that passed)."""
    reasons = exc.response.get("CancellationReasons") or []
    return [str(reason.get("Code", "None")) for reason in reasons]


def _cancelled(exc: BaseException) -> list[str] | None:
    if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") == (
        "TransactionCanceledException"
    ):
        return cancellation_codes(exc)
    return None


class CaseStore:
    """The cases table (and the alerts table, for the rows written beside a case)."""

    def __init__(self, cases_table: str, alerts_table: str, client: Any) -> None:
        self.table = cases_table
        self.alerts_table = alerts_table
        self.client = client

    # --- the sink: an alert's row, grouped ------------------------------------------------

    def write_alert(self, alert: Alert, written_at_ms: int) -> Role | None:
        """Write ``alert``'s row and group it; what it did to the cases, or None when its
        row existed already (a replay: nothing changed)."""
        for _ in range(RACE_ATTEMPTS):
            pointer = self._get(
                {"pk": {"S": slot_of(alert.rule_id, alert.group_by, alert.group_key)}}
            )
            case_id = _string(pointer, "case_id") if pointer else None
            if case_id is None:
                items = self._open_items(alert, written_at_ms)
                role = Role.OPENED
            else:
                case = self._get(case_key(case_id))
                if case is None or _string(case, "status") != OPEN:
                    continue  # closed under our feet: its slot is being freed
                items = self._join_items(alert, case, written_at_ms)
                role = Role.JOINED
            try:
                self.client.transact_write_items(TransactItems=items)
                return role
            except ClientError as exc:
                codes = _cancelled(exc)
                if codes is None:
                    raise
                if codes[0] == CONDITION_FAILED:
                    return None  # the row exists: this alert was written (and grouped)
                if codes[1] == CONDITION_FAILED:
                    return self._write_replayed(alert, written_at_ms)
                if CONDITION_FAILED not in codes:
                    raise  # throttled, conflicting: the writer's classification and rounds
                # The slot was taken, or the case closed: look again.
        raise RaceLostError(
            f"case slot of rule {alert.rule_id} contended {RACE_ATTEMPTS} times in a row"
        )

    def _row(self, alert: Alert, written_at_ms: int, case_id: str, role: Role) -> dict[str, Any]:
        return {
            "Put": {
                "TableName": self.alerts_table,
                "Item": {
                    **alert_item(alert, written_at_ms),
                    "case_id": {"S": case_id},
                    "case_role": {"S": role.value},
                },
                "ConditionExpression": CONDITION_NEW_ALERT,
            }
        }

    def _membership(self, alert: Alert, case_id: str, role: Role) -> dict[str, Any]:
        return {
            "Put": {
                "TableName": self.table,
                "Item": {
                    **membership_key(alert.alert_id),
                    "case_id": {"S": case_id},
                    "role": {"S": role.value},
                },
                "ConditionExpression": CONDITION_NEW,
            }
        }

    def _open_items(self, alert: Alert, written_at_ms: int) -> list[dict[str, Any]]:
        case_id = case_id_for(alert)
        slot = {
            "pk": {"S": slot_of(alert.rule_id, alert.group_by, alert.group_key)},
            "case_id": {"S": case_id},
        }
        return [
            self._row(alert, written_at_ms, case_id, Role.OPENED),
            self._membership(alert, case_id, Role.OPENED),
            {"Put": {"TableName": self.table, "Item": slot, "ConditionExpression": CONDITION_NEW}},
            {
                "Put": {
                    "TableName": self.table,
                    "Item": opened_item(alert, case_id, written_at_ms),
                    "ConditionExpression": CONDITION_NEW,
                }
            },
        ]

    def _join_items(
        self, alert: Alert, case: Mapping[str, Any], written_at_ms: int
    ) -> list[dict[str, Any]]:
        case_id = _string(case, "case_id") or ""
        listed_alerts = len(case.get("alert_ids", {}).get("L", []))
        listed_txns = len(case.get("txn_ids", {}).get("L", []))
        return [
            self._row(alert, written_at_ms, case_id, Role.JOINED),
            self._membership(alert, case_id, Role.JOINED),
            {
                "Update": {
                    "TableName": self.table,
                    "Key": case_key(case_id),
                    **join_update(alert, listed_alerts, listed_txns),
                }
            },
        ]

    def _write_replayed(self, alert: Alert, written_at_ms: int) -> Role | None:
        """The row of an alert grouped before whose row has expired: written again, with the
        case it went to, as ``replayed`` (the notifier does not page for it)."""
        membership = self._get(membership_key(alert.alert_id))
        case_id = _string(membership, "case_id") if membership else None
        put = self._row(alert, written_at_ms, case_id or "", Role.REPLAYED)["Put"]
        try:
            self.client.put_item(**put)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return None
            raise
        return Role.REPLAYED

    def _get(self, key: dict[str, Any]) -> dict[str, Any] | None:
        item: dict[str, Any] | None = self.client.get_item(
            TableName=self.table, Key=key, ConsistentRead=True
        ).get("Item")
        return item

    # --- the API and the CLI --------------------------------------------------------------

    def get(self, case_id: str) -> Case | None:
        item = self._get(case_key(case_id))
        return None if item is None else Case.from_item(item)

    def list(self, wanted: CaseFilter) -> list[Case]:
        """Cases newest first (by the time they opened), at most ``wanted.limit``."""
        statuses = (wanted.status,) if wanted.status else STATUSES
        found: list[Case] = []
        for status in statuses:
            # Each status's cases come newest first: its first ``limit`` are all it can add.
            for count, case in enumerate(self._query(status, wanted), 1):
                found.append(case)
                if count >= wanted.limit:
                    break
        found.sort(key=lambda case: (case.opened_at, case.case_id), reverse=True)
        return found[: wanted.limit]

    def _query(self, status: str, wanted: CaseFilter) -> Iterator[Case]:
        filters: list[str] = []
        values: dict[str, Any] = {":status": {"S": status}}
        names = {"#status": "status"}
        for attribute, value in (
            ("rule_id", wanted.rule_id),
            ("group_key", wanted.group_key),
            ("disposition", wanted.disposition),
        ):
            if value is not None:
                filters.append(f"{attribute} = :{attribute}")
                values[f":{attribute}"] = {"S": value}
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": STATUS_INDEX,
            "KeyConditionExpression": "#status = :status",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": False,
        }
        if filters:
            kwargs["FilterExpression"] = " AND ".join(filters)
        while True:
            page = self.client.query(**kwargs)
            for item in page.get("Items", []):
                yield Case.from_item(item)
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def close(self, case_id: str, closing: Closing, closed_at: str) -> tuple[Case, bool]:
        """Close an open case; (the case, True) when this call closed it, (the case, False)
        when the same request had closed it already (a retry). A case closed otherwise is
        refused (409), one that does not exist too (404)."""
        case = self.get(case_id)
        if case is None:
            raise CaseError("case_id", f"no case {case_id!r}", status=404)
        if case.status == CLOSED:
            return self._closed_already(case, closing)
        slot = slot_of(case.rule_id, case.group_by, case.group_key)
        try:
            self.client.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self.table,
                            "Key": case_key(case_id),
                            "UpdateExpression": "SET #status = :closed, disposition = :d,"
                            " note = :n, closed_by = :b, closed_at = :at",
                            "ConditionExpression": "#status = :open",
                            "ExpressionAttributeNames": {"#status": "status"},
                            "ExpressionAttributeValues": {
                                ":closed": {"S": CLOSED},
                                ":open": {"S": OPEN},
                                ":d": {"S": closing.disposition},
                                ":n": {"S": closing.note},
                                ":b": {"S": closing.closed_by},
                                ":at": {"S": closed_at},
                            },
                        }
                    },
                    {
                        # Frees the slot, unless it already names a newer case.
                        "Delete": {
                            "TableName": self.table,
                            "Key": {"pk": {"S": slot}},
                            "ConditionExpression": "attribute_not_exists(pk) OR case_id = :c",
                            "ExpressionAttributeValues": {":c": {"S": case_id}},
                        }
                    },
                ]
            )
        except ClientError as exc:
            codes = _cancelled(exc)
            if codes is None or codes[0] != CONDITION_FAILED:
                raise
            # Closed by someone else between our read and our write.
            return self._closed_already(self.get(case_id) or case, closing)
        closed = self.get(case_id)
        assert closed is not None
        return closed, True

    @staticmethod
    def _closed_already(case: Case, closing: Closing) -> tuple[Case, bool]:
        if closing.same_as(case):
            return case, False
        raise CaseError(
            "case_id",
            f"case {case.case_id} is already closed ({case.disposition}, by {case.closed_by}"
            f" at {case.closed_at})",
            status=409,
        )


def table_problem(exc: BaseException, table: str, endpoint: str | None) -> str:
    """One line on a failed call to the cases table: an error code, never a message."""
    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach DynamoDB at {endpoint or 'AWS'} (FRAUD_DYNAMODB_ENDPOINT)"
    code = error_code(exc)
    if code == "ResourceNotFoundException":
        return f"the cases table {table!r} does not exist (FRAUD_CASES_TABLE)"
    return f"the cases table {table!r} did not answer: {code}"


def _string(item: Mapping[str, Any] | None, name: str) -> str | None:
    value = (item or {}).get(name)
    if isinstance(value, Mapping) and isinstance(value.get("S"), str):
        return str(value["S"])
    return None


def create_table(client: Any, name: str) -> bool:
    """Create the cases table as Terraform does (for DynamoDB Local); True if it was new."""
    try:
        client.create_table(
            TableName=name,
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "status", "AttributeType": "S"},
                {"AttributeName": "opened_at", "AttributeType": "S"},
            ],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": STATUS_INDEX,
                    "KeySchema": [
                        {"AttributeName": "status", "KeyType": "HASH"},
                        {"AttributeName": "opened_at", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
            BillingMode="PAY_PER_REQUEST",
        )
    except client.exceptions.ResourceInUseException:
        return False
    client.get_waiter("table_exists").wait(
        TableName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 150}
    )
    return True

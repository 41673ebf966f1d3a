"""Cases, pure: what a case is, its ids, its DynamoDB items and how it is closed. No I/O.

A case gathers the alerts of one rule on one key (``rule_id``, ``group_by``, ``group_key``)
while it is open. The first alert opens it; its id is a hash of the rule, the key and that
opening alert's id, so the same alert always names the same case, however often it is
replayed. While a case is open, a pointer item (its *slot*) names it, and every later alert
of that rule on that key joins it. Closing it records a disposition, a note and who closed
it, and frees the slot: the next alert opens a new case.

Items are in DynamoDB's wire format, like the alert rows (``app.delivery.dynamodb``). The
cases table holds three kinds, told apart by their key's prefix:

- ``case#<case_id>``: the case (the only kind with ``status``, so the ``by_status`` index
  holds cases alone);
- ``open#<slot>``: the open case of a rule on a key, while there is one;
- ``alert#<alert_id>``: the case an alert went to, kept as long as the case, so a replayed
  alert finds its case even after its alert row expired.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.detection.models import Alert
from app.detection.pan import contains_pan, redact_text

OPEN = "open"
CLOSED = "closed"
STATUSES = (OPEN, CLOSED)
DISPOSITIONS = ("fraud", "not_fraud", "inconclusive")
STATUS_INDEX = "by_status"  # hash key status, range key opened_at

# A case lists this many of its alerts' ids and this many txn ids; past that it counts them.
# A case on a key that keeps alerting for weeks must not outgrow DynamoDB's 400 KB item.
MAX_LISTED_ALERTS = 100
MAX_LISTED_TXNS = 1000
MAX_NOTE_CHARS = 2000
MAX_CLOSED_BY_CHARS = 128
CASE_ID_HEX = 24
CASE_ID = re.compile(rf"[0-9a-f]{{{CASE_ID_HEX}}}")


class CaseError(ValueError):
    """A case request that cannot be done; ``field`` names the culprit, ``status`` is the
    HTTP status the API answers it with (the CLI exits 1 with the message)."""

    def __init__(self, field: str, problem: str, status: int = 400) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem
        self.status = status


class RaceLostError(RuntimeError):
    """Another writer kept winning an alert's case slot; the alert is retried later."""


class Role(enum.Enum):
    """What an alert did to the cases (its row's ``case_role``; the notifier reads it)."""

    OPENED = "opened"  # it opened a case: the one alert of the case that pages
    JOINED = "joined"  # it joined the open case of its rule and key: no page
    # Its row had expired and it was written again by a replay: its case is known, no page.
    REPLAYED = "replayed"


def _digest(parts: list[str], size: int) -> str:
    material = json.dumps(parts, separators=(",", ":")).encode()
    return hashlib.sha256(material).hexdigest()[:size]


def slot_of(rule_id: str, group_by: str, group_key: str) -> str:
    """The key of the pointer to the open case of a rule on a key (hashed: bounded length)."""
    return "open#" + _digest([rule_id, group_by, group_key], 32)


def case_id_for(alert: Alert) -> str:
    """The id of the case ``alert`` opens: the same alert always names the same case."""
    return _digest([alert.rule_id, alert.group_by, alert.group_key, alert.alert_id], CASE_ID_HEX)


def parse_case_id(text: str) -> str:
    if not CASE_ID.fullmatch(text):
        raise CaseError("case_id", f"is not a case id ({CASE_ID_HEX} hex digits)")
    return text


def case_key(case_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"case#{case_id}"}}


def membership_key(alert_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"alert#{alert_id}"}}


def _strings(values: list[str] | tuple[str, ...]) -> dict[str, Any]:
    return {"L": [{"S": value} for value in values]}


def opened_item(alert: Alert, case_id: str, written_at_ms: int) -> dict[str, Any]:
    """The new case ``alert`` opens."""
    return {
        **case_key(case_id),
        "case_id": {"S": case_id},
        "status": {"S": OPEN},
        "rule_id": {"S": alert.rule_id},
        "rule_version": {"N": str(alert.rule_version)},
        "group_by": {"S": alert.group_by},
        "group_key": {"S": alert.group_key},
        "severity": {"S": alert.severity},
        "description": {"S": alert.description},
        # The opening alert's detection time: a replay writes the same case, byte for byte.
        "opened_at": {"S": alert.detected_at},
        "last_alert_at": {"S": alert.detected_at},
        "opening_alert_id": {"S": alert.alert_id},
        "last_alert_id": {"S": alert.alert_id},
        "alert_count": {"N": "1"},
        "alert_ids": _strings([alert.alert_id]),
        "txn_count": {"N": str(len(alert.txn_ids))},
        "txn_ids": _strings(alert.txn_ids[:MAX_LISTED_TXNS]),
        "written_at_ms": {"N": str(written_at_ms)},
    }


def join_update(alert: Alert, listed_alerts: int, listed_txns: int) -> dict[str, Any]:
    """The UpdateItem parts (expression and values) that add ``alert`` to an open case
    already listing ``listed_alerts`` alert ids and ``listed_txns`` txn ids."""
    sets = [
        "alert_count = alert_count + :one",
        "txn_count = txn_count + :txns",
        "last_alert_id = :alert_id",
        "last_alert_at = :at",
    ]
    values: dict[str, Any] = {
        ":one": {"N": "1"},
        ":txns": {"N": str(len(alert.txn_ids))},
        ":alert_id": {"S": alert.alert_id},
        ":at": {"S": alert.detected_at},
        ":open": {"S": OPEN},
    }
    if listed_alerts < MAX_LISTED_ALERTS:
        sets.append("alert_ids = list_append(alert_ids, :alert_ids)")
        values[":alert_ids"] = _strings([alert.alert_id])
    room = MAX_LISTED_TXNS - listed_txns
    if room > 0 and alert.txn_ids:
        sets.append("txn_ids = list_append(txn_ids, :txn_ids)")
        values[":txn_ids"] = _strings(alert.txn_ids[:room])
    return {
        "UpdateExpression": "SET " + ", ".join(sets),
        "ConditionExpression": "#status = :open",
        "ExpressionAttributeNames": {"#status": "status"},
        "ExpressionAttributeValues": values,
    }


def _text(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    if not isinstance(value, Mapping):
        return None
    text = value.get("S", value.get("N"))
    return text if isinstance(text, str) else None


def _texts(item: Mapping[str, Any], name: str) -> list[str]:
    value = item.get(name)
    if not isinstance(value, Mapping):
        return []
    return [v["S"] for v in value.get("L", []) if isinstance(v, Mapping) and "S" in v]


@dataclass(frozen=True)
class Case:
    """One case as the API, the CLI and the labels show it."""

    case_id: str
    status: str
    rule_id: str
    rule_version: int
    group_by: str
    group_key: str
    severity: str
    description: str
    opened_at: str
    last_alert_at: str
    opening_alert_id: str
    last_alert_id: str
    alert_count: int
    alert_ids: tuple[str, ...]
    txn_count: int
    txn_ids: tuple[str, ...]
    disposition: str | None = None
    note: str | None = None
    closed_by: str | None = None
    closed_at: str | None = None

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Case:
        return cls(
            case_id=_text(item, "case_id") or "",
            status=_text(item, "status") or "",
            rule_id=_text(item, "rule_id") or "",
            rule_version=int(_text(item, "rule_version") or 0),
            group_by=_text(item, "group_by") or "",
            group_key=_text(item, "group_key") or "",
            severity=_text(item, "severity") or "",
            description=_text(item, "description") or "",
            opened_at=_text(item, "opened_at") or "",
            last_alert_at=_text(item, "last_alert_at") or "",
            opening_alert_id=_text(item, "opening_alert_id") or "",
            last_alert_id=_text(item, "last_alert_id") or "",
            alert_count=int(_text(item, "alert_count") or 0),
            alert_ids=tuple(_texts(item, "alert_ids")),
            txn_count=int(_text(item, "txn_count") or 0),
            txn_ids=tuple(_texts(item, "txn_ids")),
            disposition=_text(item, "disposition"),
            note=_text(item, "note"),
            closed_by=_text(item, "closed_by"),
            closed_at=_text(item, "closed_at"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "status": self.status,
            "rule_id": self.rule_id,
            "rule_version": self.rule_version,
            "group_by": self.group_by,
            "group_key": self.group_key,
            "severity": self.severity,
            "description": self.description,
            "opened_at": self.opened_at,
            "last_alert_at": self.last_alert_at,
            "opening_alert_id": self.opening_alert_id,
            "last_alert_id": self.last_alert_id,
            "alert_count": self.alert_count,
            "alert_ids": list(self.alert_ids),
            "txn_count": self.txn_count,
            "txn_ids": list(self.txn_ids),
            "disposition": self.disposition,
            "note": self.note,
            "closed_by": self.closed_by,
            "closed_at": self.closed_at,
        }


@dataclass(frozen=True)
class Closing:
    """A validated request to close a case: card numbers in the free text already masked."""

    disposition: str
    note: str
    closed_by: str

    def same_as(self, case: Case) -> bool:
        """``case`` was closed by this very request (a retry after a lost answer)."""
        return (case.disposition, case.note, case.closed_by) == (
            self.disposition,
            self.note,
            self.closed_by,
        )


def parse_closing(disposition: object, note: object, closed_by: object) -> Closing:
    """A close request checked field by field; notes and names are free text, so a card
    number in them is masked (as the DLQ masks details), never refused nor kept."""
    if disposition not in DISPOSITIONS:
        raise CaseError("disposition", f"must be one of {', '.join(DISPOSITIONS)}")
    if not isinstance(note, str) or not note.strip():
        raise CaseError("note", "must be a non-empty text saying why")
    if len(note) > MAX_NOTE_CHARS:
        raise CaseError("note", f"is longer than {MAX_NOTE_CHARS} characters")
    if not isinstance(closed_by, str) or not closed_by.strip():
        raise CaseError("closed_by", "must name who closes the case")
    if len(closed_by) > MAX_CLOSED_BY_CHARS:
        raise CaseError("closed_by", f"is longer than {MAX_CLOSED_BY_CHARS} characters")
    return Closing(
        disposition=str(disposition),
        note=redact_text(note.strip()),
        closed_by=redact_text(closed_by.strip()),
    )


@dataclass(frozen=True)
class CaseFilter:
    """What ``GET /cases`` and ``cases list`` ask for; None is no filter."""

    status: str | None = None
    rule_id: str | None = None
    group_key: str | None = None
    disposition: str | None = None
    limit: int = 50

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise CaseError("status", f"must be one of {', '.join(STATUSES)}")
        if self.disposition is not None and self.disposition not in DISPOSITIONS:
            raise CaseError("disposition", f"must be one of {', '.join(DISPOSITIONS)}")
        if self.group_key is not None and contains_pan(self.group_key):
            raise CaseError("key", "looks like a card number; use the card token")

    def matches(self, case: Case) -> bool:
        return (
            (self.status is None or case.status == self.status)
            and (self.rule_id is None or case.rule_id == self.rule_id)
            and (self.group_key is None or case.group_key == self.group_key)
            and (self.disposition is None or case.disposition == self.disposition)
        )

"""The alert model: a stream record's NewImage -> :class:`Alert`, and the
:class:`Decision` whether the record notifies. Pure functions, no I/O.

The records are read in DynamoDB's wire format (``{"S": ...}``, ``{"N": ...}``) rather
than through boto3's deserializer so that this module needs nothing but the stdlib
and numbers stay strings: an amount is shown exactly as the sink wrote it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# DynamoDB's TTL sweeper deletes as this principal; a REMOVE by anyone else is an
# operator's delete. Neither is a new alert, but the log says which it was.
TTL_PRINCIPAL = "dynamodb.amazonaws.com"

ACTIVE = "active"
SHADOW = "shadow"
# The row's case_role (app.cases): only the alert that opened its case pages; one that
# joined an open case, or was written again by a replay after its row expired, does not.
# A row without a case_role (cases off) pages as before.
OPENED = "opened"
# The reason of an alert that joined an open case: its case's message is updated instead.
JOINED = "case-joined"


class MalformedAlertError(ValueError):
    """A stream record's NewImage lacks a field the notifier needs, or has the wrong type."""


@dataclass(frozen=True)
class Alert:
    """One row of ``fraud_alerts`` as the sink wrote it; numbers stay the sink's strings."""

    alert_id: str
    rule_id: str
    rule_version: int
    status: str
    group_by: str
    group_key: str
    txn_ids: tuple[str, ...]
    aggregate_value: str
    amounts: tuple[str, ...]
    countries: tuple[str, ...]
    first_event_ts: str
    last_event_ts: str
    detected_at: str
    severity: str
    trigger_produced_at_ms: int | None = None
    expires_at: int | None = None
    case_id: str | None = None
    case_role: str | None = None
    # What explains an alert of a kind other than an aggregate (app.detection.models).
    kind: str = "aggregate"
    steps: tuple[str, ...] = ()
    explanation: tuple[tuple[str, str], ...] = ()

    def to_payload(self) -> dict[str, Any]:
        """JSON-ready dict (the SNS message body; lists rather than tuples)."""
        return {
            "alert_id": self.alert_id,
            "rule_id": self.rule_id,
            "rule_version": self.rule_version,
            "status": self.status,
            "group_by": self.group_by,
            "group_key": self.group_key,
            "txn_ids": list(self.txn_ids),
            "aggregate_value": self.aggregate_value,
            "amounts": list(self.amounts),
            "countries": list(self.countries),
            "first_event_ts": self.first_event_ts,
            "last_event_ts": self.last_event_ts,
            "detected_at": self.detected_at,
            "severity": self.severity,
            "trigger_produced_at_ms": self.trigger_produced_at_ms,
            "expires_at": self.expires_at,
            "case_id": self.case_id,
            **({"explanation": dict(self.explanation)} if self.explanation else {}),
        }


@dataclass(frozen=True)
class Decision:
    """What to do with one stream record; ``reason`` is for the log."""

    notify: bool
    reason: str
    alert: Alert | None = None
    alert_id: str | None = None


def _attr(image: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    value = image.get(name)
    if value is None or (isinstance(value, Mapping) and value.get("NULL") is True):
        return None
    if not isinstance(value, Mapping) or len(value) != 1:
        raise MalformedAlertError(f"{name}: not a DynamoDB attribute value")
    return value


def _string(image: Mapping[str, Any], name: str, *, required: bool = True) -> str:
    value = _attr(image, name)
    if value is None:
        if required:
            raise MalformedAlertError(f"{name}: missing")
        return ""
    # A number is accepted where a string is expected (and vice versa below) so that a
    # sink storing aggregate_value as N instead of S does not silence every alert.
    text = value.get("S", value.get("N"))
    if not isinstance(text, str):
        raise MalformedAlertError(f"{name}: expected S, got {next(iter(value))}")
    if required and not text:
        raise MalformedAlertError(f"{name}: empty")
    return text


def _integer(image: Mapping[str, Any], name: str, *, required: bool) -> int | None:
    value = _attr(image, name)
    if value is None:
        if required:
            raise MalformedAlertError(f"{name}: missing")
        return None
    text = value.get("N", value.get("S"))
    if not isinstance(text, str):
        raise MalformedAlertError(f"{name}: expected N, got {next(iter(value))}")
    try:
        return int(text)
    except ValueError:
        raise MalformedAlertError(f"{name}: {text!r} is not an integer") from None


def _strings(image: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = _attr(image, name)
    if value is None:
        return ()
    if "L" in value:
        items: Sequence[Any] = value["L"]
        out: list[str] = []
        for item in items:
            text = item.get("S", item.get("N")) if isinstance(item, Mapping) else None
            if not isinstance(text, str):
                raise MalformedAlertError(f"{name}: list holds a non-string element")
            out.append(text)
        return tuple(out)
    for set_type in ("SS", "NS"):
        if set_type in value and isinstance(value[set_type], list):
            return tuple(str(v) for v in value[set_type])
    raise MalformedAlertError(f"{name}: expected L of S, got {next(iter(value))}")


def alert_from_image(image: Mapping[str, Any]) -> Alert:
    """Build an :class:`Alert` from a NewImage in DynamoDB's attribute-value format."""
    return Alert(
        alert_id=_string(image, "alert_id"),
        rule_id=_string(image, "rule_id"),
        rule_version=_integer(image, "rule_version", required=True) or 0,
        status=_string(image, "status"),
        group_by=_string(image, "group_by", required=False) or "card_id",
        group_key=_string(image, "group_key"),
        txn_ids=_strings(image, "txn_ids"),
        aggregate_value=_string(image, "aggregate_value", required=False),
        amounts=_strings(image, "amounts"),
        countries=_strings(image, "countries"),
        first_event_ts=_string(image, "first_event_ts", required=False),
        last_event_ts=_string(image, "last_event_ts", required=False),
        detected_at=_string(image, "detected_at", required=False),
        severity=(_string(image, "severity", required=False) or "medium").lower(),
        trigger_produced_at_ms=_integer(image, "trigger_produced_at_ms", required=False),
        expires_at=_integer(image, "expires_at", required=False),
        case_id=_string(image, "case_id", required=False) or None,
        case_role=_string(image, "case_role", required=False) or None,
        kind=_string(image, "kind", required=False) or "aggregate",
        steps=_strings(image, "steps"),
        explanation=_pairs(image, "explanation"),
    )


def _pairs(image: Mapping[str, Any], name: str) -> tuple[tuple[str, str], ...]:
    """A map of strings (``{"M": {name: {"S": value}}}``) as (name, value) pairs."""
    value = _attr(image, name)
    if value is None:
        return ()
    found = value.get("M")
    if not isinstance(found, Mapping):
        raise MalformedAlertError(f"{name}: expected M, got {next(iter(value))}")
    return tuple((str(key), _string(found, str(key))) for key in found)


def _alert_id_of(record: Mapping[str, Any]) -> str | None:
    stream = record.get("dynamodb") or {}
    for part in ("Keys", "NewImage", "OldImage"):
        image = stream.get(part) or {}
        value = image.get("alert_id")
        if isinstance(value, Mapping) and isinstance(value.get("S"), str):
            return str(value["S"])
    return None


def classify_record(record: Mapping[str, Any]) -> Decision:
    """Decide whether a DynamoDB Streams record (Lambda event shape) is a new active alert.

    Only INSERTs notify: a MODIFY is the sink rewriting an alert that was already
    announced, a REMOVE is TTL expiry or an operator's delete. Of the INSERTs, only an
    alert that opened its case (or one written without cases) pages.
    """
    alert_id = _alert_id_of(record)
    event_name = record.get("eventName")
    if event_name == "REMOVE":
        principal = (record.get("userIdentity") or {}).get("principalId")
        reason = "ttl-expiry" if principal == TTL_PRINCIPAL else "removed"
        return Decision(notify=False, reason=reason, alert_id=alert_id)
    if event_name == "MODIFY":
        return Decision(notify=False, reason="modified", alert_id=alert_id)
    if event_name != "INSERT":
        return Decision(notify=False, reason=f"unknown-event:{event_name}", alert_id=alert_id)
    image = (record.get("dynamodb") or {}).get("NewImage")
    if not isinstance(image, Mapping):
        # A stream configured KEYS_ONLY or OLD_IMAGE would land here on every record.
        raise MalformedAlertError("INSERT without NewImage (stream view type must be NEW_IMAGE)")
    alert = alert_from_image(image)
    if alert.status == SHADOW:
        return Decision(notify=False, reason="shadow", alert=alert, alert_id=alert.alert_id)
    if alert.status != ACTIVE:
        return Decision(
            notify=False, reason=f"status:{alert.status}", alert=alert, alert_id=alert.alert_id
        )
    if alert.case_role is not None and alert.case_role != OPENED:
        return Decision(
            notify=False,
            reason=f"case-{alert.case_role}",
            alert=alert,
            alert_id=alert.alert_id,
        )
    return Decision(notify=True, reason="new-active-alert", alert=alert, alert_id=alert.alert_id)

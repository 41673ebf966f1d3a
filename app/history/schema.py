"""What the archive holds: one explicit Parquet schema per topic, and a record's row.

Amounts are exact decimals (``decimal128(38, 12)`` holds every amount the worker accepts:
at most 10^15 with at most 12 decimals, see ``FRAUD_MAX_AMOUNT``), times are UTC
timestamps with their zone, and every row carries the Kafka partition, offset and
timestamp it was read from. Rows are placed by event time (``event_date``/``event_hour``,
Hive-style directories); a dead letter has no trustworthy event time, so it is placed by
its Kafka timestamp. A label (``fraud.labels``) is placed by its Kafka timestamp too: the
time it was given to the system, which is never before the payment it labels (a chargeback
dated last month but imported today lands under today), so the labels of the payments
since a day are all in the directories from that day on. Any other archived topic (a
compacted topic of settings, say) is kept as raw audit records (``AUDIT``): key, value
text, partition, offset and timestamp, placed by Kafka timestamp.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa

from app.detection.models import PAYMENT, Alert, ms_from_iso
from app.detection.pan import redact_pans
from app.detection.validation import InvalidPayment, Limits, parse_keyed_payment

AMOUNT = pa.decimal128(38, 12)
TIME = pa.timestamp("ms", tz="UTC")

_SOURCE = [
    pa.field("kafka_partition", pa.int32(), nullable=False),
    pa.field("kafka_offset", pa.int64(), nullable=False),
    pa.field("kafka_timestamp", TIME),
]

PAYMENTS = pa.schema(
    [
        pa.field("txn_id", pa.string(), nullable=False),
        pa.field("card_id", pa.string(), nullable=False),
        pa.field("account_id", pa.string(), nullable=False),
        pa.field("amount", AMOUNT, nullable=False),
        pa.field("currency", pa.string(), nullable=False),
        pa.field("merchant_id", pa.string(), nullable=False),
        pa.field("mcc", pa.string(), nullable=False),
        pa.field("country", pa.string(), nullable=False),
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("ip", pa.string(), nullable=False),
        pa.field("ts", TIME, nullable=False),
        *_SOURCE,
        # An event other than a payment says its type (null: a payment, as in files written
        # before event types); lat/lon where it happened, when it says.
        pa.field("type", pa.string()),
        pa.field("lat", pa.float64()),
        pa.field("lon", pa.float64()),
        # A payment's BIN when it gives one (null otherwise, as in files written before BINs).
        pa.field("bin", pa.string()),
    ]
)
# What the archive keeps of an event beyond a payment's fields, as read back.
EVENT_COLUMNS = ("type", "lat", "lon")

ALERTS = pa.schema(
    [
        pa.field("alert_id", pa.string(), nullable=False),
        pa.field("rule_id", pa.string(), nullable=False),
        pa.field("rule_version", pa.int64(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("severity", pa.string(), nullable=False),
        pa.field("group_by", pa.string(), nullable=False),
        pa.field("group_key", pa.string(), nullable=False),
        pa.field("txn_ids", pa.list_(pa.string()), nullable=False),
        pa.field("amounts", pa.list_(AMOUNT), nullable=False),
        pa.field("aggregate_value", AMOUNT),
        pa.field("first_event_ts", TIME),
        pa.field("last_event_ts", TIME),
        pa.field("detected_at", TIME),
        pa.field("trigger_txn_id", pa.string()),
        *_SOURCE,
    ]
)

DEAD_LETTERS = pa.schema(
    [
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("source_topic", pa.string()),
        pa.field("source_partition", pa.int32()),
        pa.field("source_offset", pa.int64()),
        # PAN-masked by the worker before it reached the DLQ (app.delivery.dead_letter).
        pa.field("original_b64", pa.string()),
        pa.field("original_size", pa.int64()),
        pa.field("received_at", TIME),
        *_SOURCE,
    ]
)

# A label of the labels topic (app.cases.labels): a case's disposition (subject "case",
# with the case's alert and txn ids) or a chargeback (subject "txn"). Free text was masked
# before it was published. A tombstone is a row whose ``label`` is null: the label withdrawn.
LABELS = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),  # case:<case_id> or txn:<txn_id>
        pa.field("subject", pa.string()),
        pa.field("label", pa.string()),  # fraud, not_fraud, inconclusive; null: withdrawn
        pa.field("source", pa.string()),  # disposition or chargeback
        pa.field("case_id", pa.string()),
        pa.field("txn_id", pa.string()),
        pa.field("txn_ids", pa.list_(pa.string())),
        pa.field("alert_ids", pa.list_(pa.string())),
        pa.field("rule_id", pa.string()),
        pa.field("rule_version", pa.int64()),
        pa.field("group_by", pa.string()),
        pa.field("group_key", pa.string()),
        pa.field("date", pa.string()),  # a chargeback's date, as the file gave it
        pa.field("by", pa.string()),
        pa.field("at", TIME),  # when a case was closed
        pa.field("reason", pa.string()),
        pa.field("note", pa.string()),
        *_SOURCE,
    ]
)

# A record of any other archived topic, as it was: for audit, not for joins.
AUDIT = pa.schema(
    [
        pa.field("key", pa.string()),
        pa.field("value", pa.string()),  # the record's JSON text; null for a tombstone
        *_SOURCE,
    ]
)

# The directory of each topic kind in the archive, and its schema; a kind not named here
# is archived as audit records (``AUDIT``).
KINDS: dict[str, pa.Schema] = {
    "payments": PAYMENTS,
    "alerts": ALERTS,
    "dlq": DEAD_LETTERS,
    "labels": LABELS,
}


def schema_of(kind: str) -> pa.Schema:
    return KINDS.get(kind, AUDIT)


@dataclass(frozen=True, slots=True)
class Row:
    """One archived record: where it goes (event date and hour, UTC) and its columns."""

    date: str  # 2026-11-29
    hour: int
    values: dict[str, Any]


def _utc(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def _place(ms: int, values: dict[str, Any]) -> Row:
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return Row(moment.strftime("%Y-%m-%d"), moment.hour, values)


def _source(partition: int, offset: int, timestamp_ms: int | None) -> dict[str, Any]:
    return {
        "kafka_partition": partition,
        "kafka_offset": offset,
        "kafka_timestamp": _utc(timestamp_ms),
    }


def payment_row(
    value: bytes | None,
    partition: int,
    offset: int,
    timestamp_ms: int,
    limits: Limits,
    key: bytes | None = None,
) -> Row | None:
    """The row of a ``payments.raw`` record; None if it is not a valid payment, or its
    Kafka ``key`` holds a card number (the worker dead-letters it, so it is archived with
    its reason under ``dlq``). The archive reads a roll's payments in bulk
    (``app.history.payments``), and each record it cannot vouch for this way."""
    found = payment_values(value, partition, offset, timestamp_ms, limits, key)
    if found is None:
        return None
    ts_ms, values = found
    return _place(ts_ms, values)


def payment_values(
    value: bytes | None,
    partition: int,
    offset: int,
    timestamp_ms: int,
    limits: Limits,
    key: bytes | None = None,
) -> tuple[int, dict[str, Any]] | None:
    """:func:`payment_row`'s event time (ms) and columns, as the worker's validator reads
    the record (``timestamp_ms`` is its clock: how far ahead ``ts`` may be)."""
    try:
        payment, _ = parse_keyed_payment(key, value, timestamp_ms, limits)
    except InvalidPayment:
        return None
    values = {
        "txn_id": payment.txn_id,
        "card_id": payment.card_id,
        "account_id": payment.account_id,
        "amount": payment.amount,
        "currency": payment.currency,
        "merchant_id": payment.merchant_id,
        "mcc": payment.mcc,
        "country": payment.country,
        "device_id": payment.device_id,
        "ip": payment.ip,
        "ts": _utc(payment.ts_ms),
        **_source(partition, offset, timestamp_ms),
        "type": None if payment.type == PAYMENT else payment.type,
        "lat": payment.lat,
        "lon": payment.lon,
        "bin": payment.bin or None,
    }
    return payment.ts_ms, values


def alert_row(value: bytes | None, partition: int, offset: int, timestamp_ms: int) -> Row | None:
    """The row of a ``fraud.alerts`` record, placed by its last event's time."""
    if value is None:
        return None
    try:
        alert = Alert.from_json(value)
        amounts = [Decimal(a) for a in alert.amounts]
        aggregate = Decimal(alert.aggregate_value)
    except (ValueError, KeyError, TypeError, ArithmeticError):
        # Not an alert this worker could have written (Decimal raises InvalidOperation, an
        # ArithmeticError): skipped like any unreadable record, never a crash-loop.
        return None
    last_ms = ms_from_iso(alert.last_event_ts) or timestamp_ms
    values = {
        "alert_id": alert.alert_id,
        "rule_id": alert.rule_id,
        "rule_version": alert.rule_version,
        "status": alert.status,
        "severity": alert.severity,
        "group_by": alert.group_by,
        "group_key": alert.group_key,
        "txn_ids": list(alert.txn_ids),
        "amounts": amounts,
        "aggregate_value": aggregate,
        "first_event_ts": _utc(ms_from_iso(alert.first_event_ts)),
        "last_event_ts": _utc(last_ms),
        "detected_at": _utc(ms_from_iso(alert.detected_at)),
        "trigger_txn_id": alert.trigger_txn_id,
        **_source(partition, offset, timestamp_ms),
    }
    return _place(last_ms, values)


def dead_letter_row(
    value: bytes | None, partition: int, offset: int, timestamp_ms: int
) -> Row | None:
    """The row of a ``payments.dlq`` record, placed by its Kafka timestamp."""
    try:
        body = json.loads(value or b"")
        source = body.get("source") or {}
        values = {
            "reason": str(body["reason"]),
            "detail": body.get("detail"),
            "source_topic": source.get("topic"),
            "source_partition": source.get("partition"),
            "source_offset": source.get("offset"),
            "original_b64": body.get("original_b64"),
            "original_size": body.get("original_size"),
            "received_at": _utc(ms_from_iso(body.get("received_at"))),
            **_source(partition, offset, timestamp_ms),
        }
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return _place(timestamp_ms, values)


def _text(raw: bytes | None) -> str | None:
    """A key or value as text, with any card number in it masked: the producers of these
    topics mask free text, but the archive does not rely on every producer."""
    return None if raw is None else redact_pans(raw).decode("utf-8", errors="replace")


def _strings(value: object) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise TypeError("not a list")
    return [str(item) for item in value]


def _optional(value: object) -> str | None:
    return None if value is None else str(value)


def label_row(
    key: bytes | None, value: bytes | None, partition: int, offset: int, timestamp_ms: int
) -> Row | None:
    """The row of a ``fraud.labels`` record, placed by its Kafka timestamp (when the label
    was given); a tombstone is a row without a label. None for a record that is not a label
    (no key, not JSON, a field of the wrong type): skipped, never a crash-loop."""
    subject_key = _text(key)
    if not subject_key:
        return None
    values: dict[str, Any] = {"key": subject_key, **_source(partition, offset, timestamp_ms)}
    if value is None:
        return _place(timestamp_ms, values)
    try:
        body = json.loads(_text(value) or "")
        label = body["label"]
        if not isinstance(label, str):
            raise TypeError("label")
        version = body.get("rule_version")
        values.update(
            {
                "subject": _optional(body.get("subject")),
                "label": label,
                "source": _optional(body.get("source")),
                "case_id": _optional(body.get("case_id")),
                "txn_id": _optional(body.get("txn_id")),
                "txn_ids": _strings(body.get("txn_ids")),
                "alert_ids": _strings(body.get("alert_ids")),
                "rule_id": _optional(body.get("rule_id")),
                "rule_version": None if version is None else int(version),
                "group_by": _optional(body.get("group_by")),
                "group_key": _optional(body.get("group_key")),
                "date": _optional(body.get("date")),
                "by": _optional(body.get("by")),
                "at": _utc(ms_from_iso(body.get("at"))),
                "reason": _optional(body.get("reason")),
                "note": _optional(body.get("note")),
            }
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return _place(timestamp_ms, values)


def audit_row(
    key: bytes | None, value: bytes | None, partition: int, offset: int, timestamp_ms: int
) -> Row:
    """The row of a record of any other archived topic: as it was, placed by its Kafka
    timestamp."""
    values = {"key": _text(key), "value": _text(value), **_source(partition, offset, timestamp_ms)}
    return _place(timestamp_ms, values)

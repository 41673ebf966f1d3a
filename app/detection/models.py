"""Wire models of the engine: Payment in, Alert out.

These are immutable value types with hand-written JSON codecs instead of
``faust.Record``: the hot path decodes each payment exactly once, and
validation must see the original bytes to forward them to the DLQ. A Payment is a
NamedTuple rather than a frozen dataclass: it is built for every record, and a frozen
dataclass sets each of its 12 fields through ``object.__setattr__`` (2.3 µs against
0.9 µs here).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple

PAYMENT_FIELDS = (
    "txn_id",
    "card_id",
    "account_id",
    "amount",
    "currency",
    "merchant_id",
    "mcc",
    "country",
    "device_id",
    "ip",
    "ts",
)
# What an event on ``payments.raw`` may be (its optional ``type``; none is a payment), and
# per type the fields it must have and may have besides ``txn_id``, ``account_id`` and ``ts``
# (which every type has) and ``lat``/``lon`` (which every type may have, both or neither).
# A payment's are today's eleven; a field a type has not reads as "" (an amount as 0).
PAYMENT = "payment"
EVENT_TYPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    PAYMENT: (
        ("card_id", "amount", "currency", "merchant_id", "mcc", "country", "device_id", "ip"),
        (),
    ),
    "refund": (
        ("card_id", "amount", "currency", "merchant_id"),
        ("mcc", "country", "device_id", "ip"),
    ),
    "login": (("device_id", "ip"), ("country",)),
    "password_reset": ((), ("device_id", "ip", "country")),
    "card_added": (("card_id",), ("device_id", "ip", "country")),
    "payout": (("amount", "currency"), ("card_id", "device_id", "ip", "country")),
}
# Optional on every event that has a card (a payment, or a type above with ``card_id``): the
# card's BIN, the first 6 or 8 digits of its number (PCI DSS lets them be stored and shown).
BIN = "bin"
BIN_LENGTHS = (6, 8)


class Payment(NamedTuple):
    txn_id: str
    card_id: str
    account_id: str
    amount: Decimal
    currency: str
    merchant_id: str
    mcc: str
    country: str
    device_id: str
    ip: str
    ts: str
    ts_ms: int  # event time as epoch milliseconds, derived from ``ts``
    # An event of another type (``EVENT_TYPES``) is a Payment too, its absent fields empty;
    # a record without ``type`` is a payment. Where it happened, when the event says so.
    type: str = PAYMENT
    lat: float | None = None
    lon: float | None = None
    bin: str = ""  # the card's BIN (``BIN``), "" when the event does not say

    def field(self, name: str) -> str | Decimal:
        """A payment attribute by its wire name (rules address fields by name)."""
        value: str | Decimal = getattr(self, name)
        return value

    def fingerprint(self) -> str:
        """What the payment says, as 16 hex digits: a redelivery (the same ``txn_id`` with the
        same content) has the same fingerprint, a reused ``txn_id`` with other content does
        not. Equal amounts and instants in other spellings (``1000.00``, ``1E+3``; ``Z``,
        ``+00:00``) count as the same content."""
        material = "\x1f".join(
            (
                self.txn_id,
                self.card_id,
                self.account_id,
                str(self.amount.normalize()),
                self.currency,
                self.merchant_id,
                self.mcc,
                self.country,
                self.device_id,
                self.ip,
                str(self.ts_ms),
            )
        )
        if self.type != PAYMENT or self.lat is not None:
            # Only then: a payment without a location keeps the fingerprint it always had.
            material += f"\x1f{self.type}\x1f{self.lat!r}\x1f{self.lon!r}"
        if self.bin:
            material += f"\x1fbin={self.bin}"  # only then, for the same reason
        return hashlib.blake2b(material.encode(), digest_size=8).hexdigest()

    def to_json(self) -> bytes:
        if self.type != PAYMENT:
            needed, optional = EVENT_TYPES[self.type]
            names = ("txn_id", "account_id", *needed, *optional, "ts")
            body: dict[str, Any] = {"type": self.type}
            body.update((name, getattr(self, name)) for name in names if getattr(self, name) != "")
        else:
            body = {name: getattr(self, name) for name in PAYMENT_FIELDS}
        if "amount" in body:
            body["amount"] = str(self.amount)
        if self.lat is not None:
            body["lat"], body["lon"] = self.lat, self.lon
        if self.bin:
            body[BIN] = self.bin
        return json.dumps(body, separators=(",", ":")).encode()


def iso_from_ms(ts_ms: int) -> str:
    """Millisecond ISO 8601 in UTC with a ``Z`` suffix, e.g. ``2026-11-28T14:03:07.250Z``."""
    moment = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


def ms_from_iso(text: object) -> int | None:
    """Epoch milliseconds of an ISO 8601 time (the inverse of :func:`iso_from_ms`); None if
    ``text`` is not one."""
    try:
        return int(datetime.fromisoformat(str(text)).timestamp() * 1000)
    except ValueError:
        return None


def alert_id_for(rule_id: str, rule_version: int, group_key: str, txn_ids: list[str]) -> str:
    """Deterministic alert id: the same rule, version, key and events give the same id."""
    material = json.dumps(
        [rule_id, rule_version, group_key, sorted(txn_ids)], separators=(",", ":")
    ).encode()
    return hashlib.sha256(material).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Alert:
    alert_id: str
    rule_id: str
    rule_version: int
    status: str  # "active" or "shadow"
    group_by: str  # e.g. "card_id" or "account_id+device_id"
    group_key: str
    txn_ids: tuple[str, ...]
    amounts: tuple[str, ...]
    countries: tuple[str, ...]
    aggregate_value: str
    first_event_ts: str
    last_event_ts: str
    detected_at: str
    trigger_txn_id: str
    trigger_produced_at_ms: int
    severity: str
    description: str = ""
    # What explains an alert of a kind other than an aggregate rule; left out of its JSON
    # when empty, so an aggregate rule's alert reads exactly as before kinds existed.
    kind: str = "aggregate"
    # A sequence's: the step (from 1) each of ``txn_ids`` matched.
    steps: tuple[int, ...] = ()
    # Other facts of the kind, as (name, value) pairs, e.g. a first-seen rule's field.
    explanation: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        body = {
            "alert_id": self.alert_id,
            "rule_id": self.rule_id,
            "rule_version": self.rule_version,
            "status": self.status,
            "group_by": self.group_by,
            "group_key": self.group_key,
            "txn_ids": list(self.txn_ids),
            "amounts": list(self.amounts),
            "countries": list(self.countries),
            "aggregate_value": self.aggregate_value,
            "first_event_ts": self.first_event_ts,
            "last_event_ts": self.last_event_ts,
            "detected_at": self.detected_at,
            "trigger_txn_id": self.trigger_txn_id,
            "trigger_produced_at_ms": self.trigger_produced_at_ms,
            "severity": self.severity,
            "description": self.description,
        }
        if self.kind != "aggregate":
            body["kind"] = self.kind
        if self.steps:
            body["steps"] = list(self.steps)
        if self.explanation:
            body["explanation"] = dict(self.explanation)
        return body

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Alert:
        body = json.loads(raw)
        return cls(
            alert_id=body["alert_id"],
            rule_id=body["rule_id"],
            rule_version=int(body["rule_version"]),
            status=body["status"],
            group_by=body["group_by"],
            group_key=body["group_key"],
            txn_ids=tuple(body["txn_ids"]),
            amounts=tuple(body["amounts"]),
            countries=tuple(body["countries"]),
            aggregate_value=body["aggregate_value"],
            first_event_ts=body["first_event_ts"],
            last_event_ts=body["last_event_ts"],
            detected_at=body["detected_at"],
            trigger_txn_id=body["trigger_txn_id"],
            trigger_produced_at_ms=int(body["trigger_produced_at_ms"]),
            severity=body["severity"],
            description=body.get("description", ""),
            kind=body.get("kind", "aggregate"),
            steps=tuple(body.get("steps", ())),
            explanation=tuple(body.get("explanation", {}).items()),
        )

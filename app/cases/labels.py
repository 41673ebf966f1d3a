"""Labels: what people and chargebacks say was fraud, as records of the labels topic.

The topic is compacted and keyed by what a label labels, so the latest word on each
subject survives and a repeat (a retried close, a chargeback file imported twice) is the
same record again:

- ``case:<case_id>``: a case's disposition (``fraud``, ``not_fraud``, ``inconclusive``),
  with the case's rule, key, alert ids and txn ids, so a reader needs no case table;
- ``txn:<txn_id>``: a chargeback (``fraud``) on one payment, whether or not a rule flagged
  it (one no rule flagged is a missed fraud).

Free text (a note, a reason) has its card numbers masked, as everywhere else.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from app.cases.model import Case
from app.detection.pan import contains_pan, redact_text

SCHEMA = 1
CHARGEBACK_COLUMNS = ("txn_id", "date", "reason")
MAX_TXN_ID_CHARS = 128
MAX_REASON_CHARS = 500


class LabelFileError(ValueError):
    """A chargebacks file that is refused whole; the message names the line and the field."""


@dataclass(frozen=True)
class Label:
    key: str
    body: dict[str, Any]

    def record(self) -> tuple[str, bytes]:
        """(key, value) of the labels topic."""
        return self.key, json.dumps(self.body, separators=(",", ":"), sort_keys=True).encode()


def disposition_label(case: Case) -> Label:
    """The label a closed case gives: its disposition, on the case and its payments."""
    return Label(
        f"case:{case.case_id}",
        {
            "schema": SCHEMA,
            "subject": "case",
            "case_id": case.case_id,
            "label": case.disposition,
            "source": "disposition",
            "rule_id": case.rule_id,
            "rule_version": case.rule_version,
            "group_by": case.group_by,
            "group_key": case.group_key,
            "alert_ids": list(case.alert_ids),
            "alert_count": case.alert_count,
            "txn_ids": list(case.txn_ids),
            "txn_count": case.txn_count,
            "note": case.note,
            "by": case.closed_by,
            "at": case.closed_at,
        },
    )


def _date(text: str) -> str:
    """An ISO date, or a time with its zone, as given; ValueError otherwise."""
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            raise ValueError("a time needs its zone") from None
        return moment.isoformat()


def parse_chargebacks(text: str) -> list[Label]:
    """The labels of a chargebacks CSV (``txn_id,date,reason``, a header line first); the
    whole file is refused at its first bad line, naming the line and the field."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or tuple(cell.strip() for cell in rows[0]) != CHARGEBACK_COLUMNS:
        raise LabelFileError(f"line 1: the header must be {','.join(CHARGEBACK_COLUMNS)}")
    labels: dict[str, Label] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(CHARGEBACK_COLUMNS):
            raise LabelFileError(f"line {number}: {len(row)} columns, not 3 (txn_id,date,reason)")
        txn_id, when, reason = (cell.strip() for cell in row)
        if not txn_id or len(txn_id) > MAX_TXN_ID_CHARS:
            raise LabelFileError(f"line {number}: txn_id: must be 1-{MAX_TXN_ID_CHARS} characters")
        if contains_pan(txn_id):
            raise LabelFileError(f"line {number}: txn_id: looks like a card number")
        try:
            when = _date(when)
        except ValueError:
            raise LabelFileError(
                f"line {number}: date: not an ISO date (2026-11-28) or zoned time"
            ) from None
        if len(reason) > MAX_REASON_CHARS:
            raise LabelFileError(
                f"line {number}: reason: longer than {MAX_REASON_CHARS} characters"
            )
        labels[txn_id] = Label(
            f"txn:{txn_id}",
            {
                "schema": SCHEMA,
                "subject": "txn",
                "txn_id": txn_id,
                "label": "fraud",
                "source": "chargeback",
                "date": when,
                "reason": redact_text(reason),
            },
        )
    return list(labels.values())


async def publish_labels(bootstrap: str, topic: str, labels: list[Label]) -> None:
    """Publish labels and wait until Kafka has them all."""
    from app.rules_admin.topic import publish  # noqa: PLC0415 (Kafka client: only when used)

    await publish(bootstrap, topic, [label.record() for label in labels])

"""Rules judged by outcomes: what the labels say of each rule version's alerts. Synchronous,
free of Faust; the definitions are in docs/how-to/archive-and-backtest.md (Outcomes).

Labels come from the labels topic (``app.cases.labels``), here as the archive keeps them
(``labels/``): the latest label of each subject counts (the topic is compacted; a tombstone
withdraws one). A case's disposition labels the case's alerts and payments; a chargeback
labels one payment as fraud.

- A payment is **fraud** if any label on it says fraud (a chargeback, or a case closed as
  fraud that lists it), else **not_fraud** if one says so, else **inconclusive** if one
  says so, else unlabelled.
- An alert takes the strongest of its case's disposition and its payments' verdicts, in
  that order: fraud, not_fraud, inconclusive; with none it is unlabelled.
- Per rule version over a period (payments and alerts by event time in ``[since,
  until)``): precision is fraud alerts / (fraud + not_fraud alerts); recall is the
  labelled-fraud payments of the period that its alerts cite / every labelled-fraud
  payment of the period, flagged by a rule or not (a chargeback no rule saw is a miss).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from app.history.backtest import files_in_range, in_range, scan
from app.history.files import Archive, ArchivedFile, ArchiveError
from app.history.schema import ALERTS, LABELS, PAYMENTS, TIME

FRAUD, NOT_FRAUD, INCONCLUSIVE, UNLABELLED = "fraud", "not_fraud", "inconclusive", "unlabelled"
_RANK = {INCONCLUSIVE: 1, NOT_FRAUD: 2, FRAUD: 3}
_DATE_DIR = re.compile(r"event_date=(\d{4}-\d{2}-\d{2})")
_LABEL_COLUMNS = ["key", "label", "case_id", "txn_id", "txn_ids", "alert_ids"]


def stronger(first: str | None, second: str | None) -> str | None:
    """The verdict that wins: fraud over not_fraud over inconclusive over none."""
    if second is None or (first is not None and _RANK[first] >= _RANK[second]):
        return first
    return second


@dataclass(frozen=True)
class LabelFacts:
    """What the outcomes read of one label."""

    label: str | None  # None: withdrawn (a tombstone)
    case_id: str | None = None
    txn_ids: tuple[str, ...] = ()
    alert_ids: tuple[str, ...] = ()

    @classmethod
    def of(cls, body: dict[str, Any] | None) -> LabelFacts:
        """From a label's JSON body (``app.cases.labels``) or its archived row; None is a
        tombstone."""
        if body is None:
            return cls(None)
        txn_ids = list(body.get("txn_ids") or [])
        if body.get("txn_id"):
            txn_ids.append(body["txn_id"])
        return cls(
            body.get("label"),
            body.get("case_id"),
            tuple(txn_ids),
            tuple(body.get("alert_ids") or []),
        )


@dataclass
class LabelBook:
    """Verdicts on payments and alerts from the latest label of each subject."""

    payments: dict[str, str] = field(default_factory=dict)  # txn id -> verdict
    alerts: dict[str, str] = field(default_factory=dict)  # alert id -> its case's disposition
    cases: dict[str, str] = field(default_factory=dict)  # alert id -> the case it is in
    labels: int = 0  # subjects with a label in force

    @classmethod
    def of(cls, records: Iterable[tuple[str, LabelFacts]]) -> LabelBook:
        """``records``: (key, label) in topic order; a later label of a key replaces it."""
        latest: dict[str, LabelFacts] = {}
        for key, facts in records:
            latest[key] = facts
        book = cls()
        for facts in latest.values():
            label = facts.label
            if label not in _RANK:
                continue  # withdrawn, or a label this version does not know
            book.labels += 1
            for txn_id in facts.txn_ids:
                book.payments[txn_id] = stronger(book.payments.get(txn_id), label) or label
            for alert_id in facts.alert_ids:
                book.alerts[alert_id] = stronger(book.alerts.get(alert_id), label) or label
                if facts.case_id:
                    book.cases[alert_id] = facts.case_id
        return book

    def fraud_txn_ids(self) -> set[str]:
        return {txn_id for txn_id, verdict in self.payments.items() if verdict == FRAUD}

    def alert_verdict(self, alert_id: str, txn_ids: Iterable[str]) -> str | None:
        verdict = self.alerts.get(alert_id)
        for txn_id in txn_ids:
            verdict = stronger(verdict, self.payments.get(txn_id))
        return verdict


@dataclass
class FraudPayments:
    """The labelled-fraud payments of a period: txn id -> (amount, currency)."""

    found: dict[str, tuple[Decimal, str]] = field(default_factory=dict)

    def amounts(self, txn_ids: Iterable[str]) -> dict[str, str]:
        """The sum of the amounts of ``txn_ids`` (of this period), per currency."""
        totals: dict[str, Decimal] = {}
        for txn_id in txn_ids:
            amount, currency = self.found[txn_id]
            totals[currency] = totals.get(currency, Decimal(0)) + amount
        return {currency: _plain(total) for currency, total in sorted(totals.items())}


def _plain(amount: Decimal) -> str:
    text = format(amount, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


@dataclass
class Outcome:
    """One rule version's alerts over a period, judged by the labels: counts only, and the
    labelled-fraud payments they cite (as many as there are labels, at most)."""

    rule_id: str
    rule_version: int
    status: str
    alerts: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    case_ids: set[str] = field(default_factory=set)
    caught: set[str] = field(default_factory=set)

    def add(self, alert_id: str, txn_ids: Iterable[str], book: LabelBook) -> None:
        txn_ids = list(txn_ids)
        self.alerts += 1
        self.verdicts[book.alert_verdict(alert_id, txn_ids) or UNLABELLED] += 1
        case_id = book.cases.get(alert_id)
        if case_id is not None:
            self.case_ids.add(case_id)
        self.caught.update(t for t in txn_ids if book.payments.get(t) == FRAUD)

    def to_json(self, fraud: FraudPayments) -> dict[str, Any]:
        fraud_alerts, not_fraud = self.verdicts[FRAUD], self.verdicts[NOT_FRAUD]
        caught = self.caught.intersection(fraud.found)
        return {
            "rule_id": self.rule_id,
            "rule_version": self.rule_version,
            "status": self.status,
            "alerts": self.alerts,
            "cases": len(self.case_ids),
            "fraud_alerts": fraud_alerts,
            "not_fraud_alerts": not_fraud,
            "inconclusive_alerts": self.verdicts[INCONCLUSIVE],
            "unlabelled_alerts": self.verdicts[UNLABELLED],
            "precision": _ratio(fraud_alerts, fraud_alerts + not_fraud),
            "fraud_payments_caught": len(caught),
            "fraud_payments": len(fraud.found),
            "missed_fraud_payments": len(fraud.found) - len(caught),
            "recall": _ratio(len(caught), len(fraud.found)),
            "amount_caught": fraud.amounts(caught),
        }


def label_files(archive: Archive, since: datetime) -> list[ArchivedFile]:
    """The labels files given on or after ``since``'s UTC date: a label is never given
    before the payment it labels, so they hold every label of the payments since then."""
    first = since.astimezone(UTC).date()
    try:
        infos = archive.filesystem.get_file_info(
            pafs.FileSelector(archive.path("labels"), allow_not_found=True)
        )
        dates = [
            m[1]
            for info in infos
            if (m := _DATE_DIR.fullmatch(info.base_name)) and m[1] >= first.isoformat()
        ]
        return archive.files("labels", dates) if dates else []
    except (OSError, ArchiveError) as exc:
        raise ArchiveError(f"cannot read the labels at {archive.url}: {exc}") from None


def read_labels(archive: Archive, since: datetime) -> LabelBook:
    """The label book of the payments since ``since``; empty with no labels archived."""
    files = label_files(archive, since)
    rows: list[tuple[int, int, str, LabelFacts]] = []
    columns = [*_LABEL_COLUMNS, "kafka_partition", "kafka_offset"]
    everything = ds.field("kafka_offset") >= 0
    for batch in scan(archive, [f.path for f in files], LABELS, columns, everything):
        for row in batch.to_pylist():
            facts = LabelFacts.of(row if row["label"] is not None else None)
            rows.append((row["kafka_partition"], row["kafka_offset"], row["key"], facts))
    rows.sort(key=lambda row: (row[0], row[1]))  # a key lives in one partition
    return LabelBook.of((key, facts) for _, _, key, facts in rows)


def fraud_payments(
    archive: Archive,
    book: LabelBook,
    since: datetime,
    until: datetime,
    arrived_since: datetime | None = None,
) -> FraudPayments:
    """The labelled-fraud payments of event time in [since, until) (that reached Kafka
    from ``arrived_since``): the archived payments are scanned for their ids alone."""
    found = FraudPayments()
    fraud = sorted(book.fraud_txn_ids())
    if not fraud:
        return found
    wanted = in_range(PAYMENTS, "ts", since, until) & ds.field("txn_id").isin(fraud)
    if arrived_since is not None:
        wanted = wanted & (ds.field("kafka_timestamp") >= pa.scalar(arrived_since, type=TIME))
    files = files_in_range(archive, "payments", since, until, missing_ok=True)
    columns = ["txn_id", "amount", "currency"]
    for batch in scan(archive, [f.path for f in files], PAYMENTS, columns, wanted):
        for txn_id, amount, currency in zip(
            *(batch.column(c).to_pylist() for c in columns), strict=True
        ):
            found.found[txn_id] = (Decimal(_plain(amount)), currency)
    return found


def live_outcomes(
    archive: Archive,
    book: LabelBook,
    since: datetime,
    until: datetime,
    arrived_since: datetime | None = None,
    rule_id: str | None = None,
) -> dict[tuple[str, int, str], Outcome]:
    """The outcome of each rule version's archived alerts (by last event time in [since,
    until)), per (rule id, version, status); a repeated alert id counts once."""
    wanted = in_range(ALERTS, "last_event_ts", since, until)
    if arrived_since is not None:
        wanted = wanted & (ds.field("kafka_timestamp") >= pa.scalar(arrived_since, type=TIME))
    if rule_id is not None:
        wanted = wanted & (ds.field("rule_id") == rule_id)
    files = files_in_range(archive, "alerts", since, until, missing_ok=True)
    columns = ["alert_id", "rule_id", "rule_version", "status", "txn_ids"]
    found: dict[tuple[str, int, str], Outcome] = {}
    seen: dict[tuple[str, int, str], set[str]] = {}
    for batch in scan(archive, [f.path for f in files], ALERTS, columns, wanted):
        values = [batch.column(c).to_pylist() for c in columns]
        for alert_id, rule, version, status, txn_ids in zip(*values, strict=True):
            key = (rule, version, status)
            ids = seen.setdefault(key, set())
            if alert_id in ids:
                continue
            ids.add(alert_id)
            found.setdefault(key, Outcome(rule, version, status)).add(alert_id, txn_ids, book)
    return found


def outcomes_report(
    archive: Archive, since: datetime, until: datetime, rule_id: str | None = None
) -> dict[str, Any]:
    """Every rule version's outcomes over [since, until), from the archive: its alerts, the
    labels and the payments they label; and what every active rule together missed."""
    book = read_labels(archive, since)
    fraud = fraud_payments(archive, book, since, until)
    outcomes = live_outcomes(archive, book, since, until, rule_id=rule_id)
    active_caught: set[str] = set()
    for outcome in outcomes.values():
        if outcome.status == "active":
            active_caught |= outcome.caught
    caught = active_caught.intersection(fraud.found)
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "labels": book.labels,
        "fraud_payments": len(fraud.found),
        "fraud_amount": fraud.amounts(fraud.found),
        "caught_by_active_rules": len(caught),
        "missed_by_active_rules": len(fraud.found) - len(caught),
        "rules": [
            outcomes[key].to_json(fraud)
            for key in sorted(outcomes, key=lambda k: (k[0], -k[1], k[2]))
        ],
    }


def outcome_line(outcome: dict[str, Any]) -> str:
    """One rule version's outcome as ``rules show`` and ``rules backtest`` print it."""

    def ratio(value: float | None, part: int, whole: int) -> str:
        return f"{'-' if value is None else f'{value:.2f}'} ({part}/{whole})"

    labelled = outcome["fraud_alerts"] + outcome["not_fraud_alerts"]
    caught, fraud = outcome["fraud_payments_caught"], outcome["fraud_payments"]
    amounts = ", ".join(f"{a} {c}" for c, a in outcome["amount_caught"].items()) or "0"
    return (
        f"{outcome['rule_id']} v{outcome['rule_version']} {outcome['status']}:"
        f" {outcome['alerts']} alerts, {outcome['cases']} closed cases;"
        f" {outcome['fraud_alerts']} fraud, {outcome['not_fraud_alerts']} not fraud,"
        f" {outcome['inconclusive_alerts']} inconclusive, {outcome['unlabelled_alerts']}"
        f" unlabelled; precision {ratio(outcome['precision'], outcome['fraud_alerts'], labelled)},"
        f" recall {ratio(outcome['recall'], caught, fraud)}"
        f" labelled-fraud payments; caught {amounts}"
    )

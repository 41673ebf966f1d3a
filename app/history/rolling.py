"""Records of one Kafka partition, gathered until they roll into files. Pure and synchronous.

A partition's buffer keeps its records as received (offset, Kafka timestamp, key, value) and
reads them only when it rolls: payments in bulk (``app.history.payments``), alerts, dead
letters, labels and audit records, which are few, one row at a time
(``app.history.schema``). It rolls when the records it holds reach ``roll_bytes`` (as
received: the Parquet files are several times smaller) or span ``roll_s`` seconds of Kafka
time, or when its first record has waited ``roll_s`` seconds of wall-clock time (a quiet
partition still reaches the archive). Rolling gives one file per event date and hour
present, named by the offsets of its first and last row, and the offset to commit once they
are durable. A record that is not archived (not a valid payment, an unreadable alert, a row
a file already holds) still counts towards that offset. The files come in the order of their
first offsets and are written in that order: a roll cut short by a crash then leaves no row
unwritten below the highest first offset in the archive, which is where a partition without
a committed offset resumes (``app.history.resume``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from app.detection.validation import Limits
from app.history.payments import HOUR_MS, payment_table
from app.history.resume import Covered
from app.history.schema import Row, alert_row, audit_row, dead_letter_row, label_row, schema_of

# (key, value, partition, offset, Kafka timestamp) -> the row of a record, or None to skip it.
RowReader = Callable[[bytes | None, bytes | None, int, int, int], Row | None]
# How each kind other than payments (read in bulk) reads its records, one at a time; a kind
# not named here is archived as audit records.
READERS: dict[str, RowReader] = {
    "alerts": lambda _key, value, partition, offset, ts: alert_row(value, partition, offset, ts),
    "dlq": lambda _key, value, partition, offset, ts: dead_letter_row(value, partition, offset, ts),
    "labels": label_row,
}


class KafkaRecord(Protocol):
    """What a buffer reads of a record (aiokafka's ConsumerRecord)."""

    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class PendingFile:
    kind: str
    date: str
    hour: int
    first: int  # offset of its first row
    last: int  # offset of its last row
    table: pa.Table


@dataclass
class PartitionBuffer:
    kind: str  # payments, alerts, dlq, labels, or any other kind (audit records)
    roll_bytes: int
    roll_s: float
    clock: Callable[[], float]
    partition: int = 0
    limits: Limits = field(default_factory=Limits)  # what a valid payment is
    first_offset: int | None = None
    last_offset: int | None = None
    size: int = 0
    first_seen: float = 0.0  # wall clock when the first record came
    first_timestamp_ms: int | None = None
    last_timestamp_ms: int | None = None
    # The records as received, column by column.
    _offsets: list[int] = field(default_factory=list)
    _timestamps: list[int] = field(default_factory=list)
    _keys: list[bytes | None] = field(default_factory=list)
    _values: list[bytes | None] = field(default_factory=list)

    def add(self, offset: int, timestamp_ms: int, key: bytes | None, value: bytes | None) -> None:
        """One record, in offset order."""
        if self.first_offset is None:
            self.first_offset, self.first_seen = offset, self.clock()
            self.first_timestamp_ms = timestamp_ms
        self.last_offset, self.last_timestamp_ms = offset, timestamp_ms
        self.size += len(value or b"") + len(key or b"")
        self._offsets.append(offset)
        self._timestamps.append(timestamp_ms)
        self._keys.append(key)
        self._values.append(value)

    def extend(self, records: Iterable[KafkaRecord]) -> None:
        """Records in offset order, as a consumer's fetch returns them: a few list
        comprehensions, not a call a record."""
        batch = list(records)
        if not batch:
            return
        keys = [r.key for r in batch]
        values = [r.value for r in batch]
        timestamps = [r.timestamp for r in batch]
        if self.first_offset is None:
            self.first_offset, self.first_seen = batch[0].offset, self.clock()
            self.first_timestamp_ms = timestamps[0]
        self.last_offset, self.last_timestamp_ms = batch[-1].offset, timestamps[-1]
        present = [b for b in (*values, *keys) if b is not None]
        self.size += sum(map(len, present))
        self._offsets += [r.offset for r in batch]
        self._timestamps += timestamps
        self._keys += keys
        self._values += values

    @property
    def empty(self) -> bool:
        return self.first_offset is None

    def due(self) -> bool:
        if self.first_offset is None:
            return False
        if self.size >= self.roll_bytes:
            return True
        first, last = self.first_timestamp_ms, self.last_timestamp_ms
        if first is not None and last is not None and last - first >= self.roll_s * 1000:
            return True
        return self.clock() - self.first_seen >= self.roll_s

    def roll(self, covered: Covered | None = None) -> tuple[list[PendingFile], int]:
        """The files to write, in this order (by first offset), and the offset to commit
        once they are durable; empties the buffer. Rows that ``covered`` says a file holds
        already (read again after a crash or a reset) are left out."""
        assert self.last_offset is not None, "roll() of an empty buffer"
        if self.kind == "payments":
            table, hours = payment_table(
                self._offsets,
                self._timestamps,
                self._keys,
                self._values,
                self.partition,
                self.limits,
            )
            groups = _by_hour(table, hours)
        else:
            groups = self._rows_by_hour()
        files = []
        for (date, hour), table in groups.items():
            kept = _uncovered(table, date, hour, covered or Covered())
            if kept.num_rows:
                offsets = kept.column("kafka_offset")
                first, last = offsets[0].as_py(), offsets[-1].as_py()
                files.append(PendingFile(self.kind, date, hour, first, last, kept))
        files.sort(key=lambda pending: pending.first)
        commit = self.last_offset + 1
        self.first_offset = self.last_offset = None
        self.first_timestamp_ms = self.last_timestamp_ms = None
        self.size = 0
        self._offsets, self._timestamps, self._keys, self._values = [], [], [], []
        return files, commit

    def _rows_by_hour(self) -> dict[tuple[str, int], pa.Table]:
        found: dict[tuple[str, int], list[dict[str, Any]]] = {}
        read = READERS.get(self.kind, audit_row)
        records = zip(self._offsets, self._timestamps, self._keys, self._values, strict=True)
        for offset, timestamp_ms, key, value in records:
            row = read(key, value, self.partition, offset, timestamp_ms)
            if row is not None:
                found.setdefault((row.date, row.hour), []).append(row.values)
        schema = schema_of(self.kind)
        return {hour: pa.Table.from_pylist(rows, schema=schema) for hour, rows in found.items()}


def _by_hour(table: pa.Table, hours: pa.Array) -> dict[tuple[str, int], pa.Table]:
    """``table``'s rows by event date and hour (``hours``: each row's, in whole hours since
    the epoch), each in the order it had. When the hours never go back (events in order, the
    usual), each hour's rows are one run of the table: a slice of it, not a copy."""
    found = {}
    present = pc.unique(hours).to_pylist()
    runs = None
    if len(present) > 1 and pc.all(pc.less_equal(hours[:-1], hours[1:])).as_py():
        counts = pc.value_counts(hours).field("counts").to_pylist()  # in order of appearance
        starts = [sum(counts[:i]) for i in range(len(counts))]
        runs = dict(zip(present, zip(starts, counts, strict=True), strict=True))
    for value in present:
        moment = datetime.fromtimestamp(value * HOUR_MS / 1000, tz=UTC)
        if len(present) == 1:
            rows = table
        elif runs is not None:
            rows = table.slice(*runs[value])
        else:
            rows = table.filter(pc.equal(hours, value))
        found[(moment.strftime("%Y-%m-%d"), moment.hour)] = rows
    return found


def _uncovered(table: pa.Table, date: str, hour: int, covered: Covered) -> pa.Table:
    """The rows of an event hour's ``table`` that no file holds yet."""
    offsets = table.column("kafka_offset")
    if not table.num_rows or pc.min(offsets).as_py() > covered.highest:
        return table  # the common case once a replay is past the files
    keep = [not covered.covers(date, hour, offset) for offset in offsets.to_pylist()]
    return table.filter(pa.array(keep, pa.bool_()))

"""Rows of one Kafka partition, gathered until they roll into files. Pure and synchronous.

A partition's buffer rolls when the records it holds reach ``roll_bytes`` (as received:
the Parquet files are several times smaller) or span ``roll_s`` seconds of Kafka time, or
when its first record has waited ``roll_s`` seconds of wall-clock time (a quiet partition
still reaches the archive). Rolling gives one file per event date and hour present, named
by the offsets of its first and last row, and the offset to commit once they are durable.
The files come in the order of their first offsets and are written in that order: a roll
cut short by a crash then leaves no row unwritten below the highest first offset in the
archive, which is where a partition without a committed offset resumes
(``app.history.resume``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa

from app.history.schema import KINDS, Row


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
    kind: str  # payments, alerts or dlq
    roll_bytes: int
    roll_s: float
    clock: Callable[[], float]
    first_offset: int | None = None
    last_offset: int | None = None
    size: int = 0
    first_seen: float = 0.0  # wall clock when the first record came
    first_timestamp_ms: int | None = None
    last_timestamp_ms: int | None = None
    # (date, hour) -> (offsets of its rows, the rows' values)
    _hours: dict[tuple[str, int], tuple[list[int], list[dict[str, object]]]] = field(
        default_factory=dict
    )

    def add(self, offset: int, timestamp_ms: int, size: int, row: Row | None) -> None:
        """One record; ``row`` None for a record that is not archived (it still counts
        towards the offset to commit)."""
        if self.first_offset is None:
            self.first_offset, self.first_seen = offset, self.clock()
            self.first_timestamp_ms = timestamp_ms
        self.last_offset, self.last_timestamp_ms = offset, timestamp_ms
        self.size += size
        if row is not None:
            offsets, values = self._hours.setdefault((row.date, row.hour), ([], []))
            offsets.append(offset)
            values.append(row.values)

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

    def roll(self) -> tuple[list[PendingFile], int]:
        """The files to write, in this order (by first offset), and the offset to commit
        once they are durable; empties the buffer."""
        assert self.last_offset is not None, "roll() of an empty buffer"
        schema = KINDS[self.kind]
        files = [
            PendingFile(
                self.kind,
                date,
                hour,
                offsets[0],
                offsets[-1],
                pa.Table.from_pylist(values, schema=schema),
            )
            for (date, hour), (offsets, values) in sorted(
                self._hours.items(), key=lambda item: item[1][0][0]
            )
        ]
        commit = self.last_offset + 1
        self.first_offset = self.last_offset = None
        self.first_timestamp_ms = self.last_timestamp_ms = None
        self.size = 0
        self._hours = {}
        return files, commit

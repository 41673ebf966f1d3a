"""app.history.resume: where a partition's archive resumes, from its own files."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import pytest

from app.history.files import ArchivedFile
from app.history.resume import Covered, resume
from app.history.rolling import PartitionBuffer
from tests.factories import payment

TOPIC = "payments.raw"
HOUR_MS = 3_600_000
BASE_MS = 1795910400000  # 2026-11-29 00:00 UTC


def archived(first: int, last: int, hour: int = 0, date: str = "2026-11-29") -> ArchivedFile:
    name = f"{TOPIC}-0-{first:020d}-{last:020d}.parquet"
    path = f"/a/payments/event_date={date}/event_hour={hour:02d}/{name}"
    return ArchivedFile(path, TOPIC, 0, first, last, date, hour)


def test_nothing_archived_nor_committed_leaves_the_start_to_the_consumer() -> None:
    assert resume([], None).offset is None
    assert resume([], 500).offset == 500


def test_a_group_without_offsets_resumes_from_the_files_not_from_the_beginning() -> None:
    files = [archived(0, 99), archived(100, 199), archived(200, 249)]
    point = resume(files, None)
    assert point.offset == 200
    assert point.covered.covers("2026-11-29", 0, 249)
    assert not point.covered.covers("2026-11-29", 0, 250)


def test_a_group_rewound_behind_the_files_resumes_from_the_files() -> None:
    assert resume([archived(0, 99), archived(100, 199)], 10).offset == 100


def test_a_committed_offset_past_the_files_is_followed() -> None:
    # A crash after the commit is impossible, so this is a group that skipped ahead on
    # purpose (or archived elsewhere): the archive does not go back for what it skipped.
    point = resume([archived(0, 99)], 5000)
    assert point.offset == 5000
    assert not point.covered.covers("2026-11-29", 0, 99)  # nothing to read there again


def test_a_roll_cut_short_mid_way_resumes_below_its_missing_file() -> None:
    # One roll of offsets 100-199, hours interleaved: hour 13 holds the even offsets, hour 14
    # the odd ones. Written by first offset, hour 13 came first; the worker died before
    # hour 14 and before the commit, and the group is gone. Resuming past the highest last
    # offset (199) would lose hour 14's rows; the highest first offset (100) does not.
    files = [archived(0, 99, hour=13), archived(100, 198, hour=13)]
    point = resume(files, None)
    assert point.offset == 100
    covered = point.covered
    assert [covered.covers("2026-11-29", 13, n) for n in (100, 150, 198)] == [True] * 3
    assert [covered.covers("2026-11-29", 14, n) for n in (101, 151, 199)] == [False] * 3
    assert not covered.covers("2026-11-30", 13, 150)  # the same hour of another day


def test_covered_spans_are_the_union_of_nested_and_touching_files() -> None:
    covered = Covered.of([archived(90, 250), archived(100, 199), archived(251, 260)])
    assert covered.ranges == {("2026-11-29", 0): [(90, 260)]}
    assert [covered.covers("2026-11-29", 0, n) for n in (89, 90, 150, 260, 261)] == [
        False,
        True,
        True,
        True,
        False,
    ]


# A model of the archive's consumer on one partition, faithful where it matters: records
# are read from the resume point, rows a file covers are dropped, rolls are cut anywhere,
# a roll's files are written in PartitionBuffer.roll's order, and any run may die after
# any file of a roll, before the commit, and come back with the group deleted or rewound.


@dataclass
class Partition:
    rows: list[tuple[int, bytes | None]]  # (timestamp, value) by offset; None: not archived
    files: list[tuple[ArchivedFile, list[int]]] = field(default_factory=list)
    committed: int | None = None

    def archived_offsets(self) -> list[int]:
        return sorted(offset for _, offsets in self.files for offset in offsets)


def partition_of(rng: random.Random, count: int) -> Partition:
    rows: list[tuple[int, bytes | None]] = []
    for offset in range(count):
        # Event times straddle hours out of order, as late payments do.
        ts = BASE_MS + rng.choice([0, 1, 1, 2, 5]) * HOUR_MS + rng.randrange(HOUR_MS)
        value = None if rng.random() < 0.1 else payment(txn_id=f"t{offset}", ts_ms=ts).to_json()
        rows.append((ts, value))
    return Partition(rows)


def run_once(partition: Partition, rng: random.Random) -> bool:
    """One run of the archiver until it dies or reaches the end; True if it reached it."""
    point = resume([f for f, _ in partition.files], partition.committed)
    position = 0 if point.offset is None else point.offset
    buffer = PartitionBuffer("payments", 10**9, 1e9, time.monotonic)
    while position < len(partition.rows):
        for offset in range(position, min(position + rng.randint(1, 40), len(partition.rows))):
            ts, value = partition.rows[offset]
            buffer.add(offset, ts, None, value)
            position = offset + 1
        files, commit = buffer.roll(point.covered)
        for pending in files:
            if rng.random() < 0.08:
                return False  # died after some of the roll's files, before the commit
            written = archived(pending.first, pending.last, pending.hour, pending.date)
            offsets = pending.table.column("kafka_offset").to_pylist()
            partition.files.append((written, offsets))
        if rng.random() < 0.05:
            return False  # died after the files, before the commit
        partition.committed = commit
    return True


@pytest.mark.parametrize("seed", range(40))
def test_any_crash_and_any_loss_of_the_group_neither_loses_nor_repeats_a_row(seed: int) -> None:
    rng = random.Random(seed)
    partition = partition_of(rng, 300)
    runs = 0
    while not run_once(partition, rng):
        runs += 1
        if rng.random() < 0.3:
            partition.committed = None  # the group deleted, or its offsets expired
        elif rng.random() < 0.2 and partition.committed:
            partition.committed = rng.randrange(partition.committed)  # rewound by hand
        assert runs < 1000
    expected = [offset for offset, (_, value) in enumerate(partition.rows) if value is not None]
    assert partition.archived_offsets() == expected


def test_a_roll_lists_its_files_by_first_offset_whatever_their_hours() -> None:
    # What ``resume`` relies on: the archiver writes a roll's files in this order.
    buffer = PartitionBuffer("payments", 10**9, 1e9, time.monotonic)
    for offset, hour in enumerate([5, 1, 5, 0, 1]):
        ts = BASE_MS + hour * HOUR_MS
        buffer.add(offset, ts, None, payment(txn_id=f"t{offset}", ts_ms=ts).to_json())
    files, commit = buffer.roll()
    assert [(f.hour, f.first, f.last) for f in files] == [(5, 0, 2), (1, 1, 4), (0, 3, 3)]
    assert commit == 5

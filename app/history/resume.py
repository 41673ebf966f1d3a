"""Where the archive of one Kafka partition resumes, read from its own files. Pure.

The archive's files are the source of truth; the consumer group's committed offset is only
a hint. A group can lose its offsets (they expire after a week with the archive off, a new
app id points at the same archive, an operator deletes or resets the group), and a worker
can die between writing a roll's files and committing its offset. Neither may cost a file
or archive a row twice, and the archive never deletes a file to make that so: what it holds
may be older than the topic's retention, and then nothing could rewrite it.

Two facts about the files make that possible from their names alone:

* Every row of a file's event hour whose offset lies between the file's first and last
  offset is archived: in that file (a roll reads an unbroken offset range and splits it by
  event hour), or in an older file of the same hour that the file's range spans (a replay
  skipped those rows, below). So a record is already archived exactly when a file of its
  row's event hour spans its offset.
* A roll writes its files in the order of their first offsets (``PartitionBuffer.roll``).
  So if a worker dies mid-roll, a missing file starts after every file of the roll that
  was written, and every row below the highest first offset in the archive is archived.

A partition therefore resumes at the higher of the committed offset (everything below it
was durable before it was committed) and the highest first offset among its files, and the
replay drops every record a file already covers. It reads again at most the records since
the first offset of the last file written, about one roll; a roll cut differently on replay
(rolls go by size and time) only fills the gaps. Seeking past the highest *last* offset
instead would be wrong: a roll's files interleave (an hour's file can span another hour's
rows), so a roll cut short by a crash can leave rows below that mark unwritten.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field

from app.history.files import ArchivedFile


@dataclass(frozen=True)
class Covered:
    """The offset ranges of one partition's files, by event hour: what a replay must not
    archive again."""

    # (event date, event hour) -> the union of its files' [first, last] offset ranges:
    # sorted, disjoint. (A replay's file can span an older one of the same hour: its rows
    # are the ones around it that the older file lacks.)
    ranges: dict[tuple[str, int], list[tuple[int, int]]] = field(default_factory=dict)
    highest: int = -1  # the highest last offset of any of these files

    @classmethod
    def of(cls, files: Iterable[ArchivedFile]) -> Covered:
        spans: dict[tuple[str, int], list[tuple[int, int]]] = {}
        for f in files:
            spans.setdefault((f.date, f.hour), []).append((f.first, f.last))
        ranges = {hour: _union(found) for hour, found in spans.items()}
        highest = max((last for found in ranges.values() for _, last in found), default=-1)
        return cls(ranges, highest)

    def covers(self, date: str, hour: int, offset: int) -> bool:
        """Whether a file of event hour ``date``/``hour`` already holds the row at ``offset``."""
        if offset > self.highest:  # the common case once the replay is past the files
            return False
        spans = self.ranges.get((date, hour))
        if not spans:
            return False
        at = bisect_right(spans, (offset, _LAST)) - 1  # the last span starting at or before
        return at >= 0 and spans[at][1] >= offset


_LAST = 2**63  # above any Kafka offset


def _union(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for first, last in sorted(spans):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


@dataclass(frozen=True)
class Resume:
    """Where one partition's archive consumer starts, and what it must not write again."""

    offset: int | None  # None: nothing archived nor committed, the consumer's reset policy
    covered: Covered
    archived_mark: int | None  # the highest first offset among the files; None if none


def resume(files: Iterable[ArchivedFile], committed: int | None) -> Resume:
    """The resume point of a partition whose files are ``files`` and whose group committed
    ``committed`` (None: no offset, e.g. the group was deleted or its offsets expired).

    An offset below the topic's earliest (retention removed it) is the consumer's to move
    up, by its ``auto_offset_reset``; the files stay.
    """
    files = list(files)
    if not files:
        return Resume(committed, Covered(), None)
    mark = max(f.first for f in files)
    start = mark if committed is None else max(committed, mark)
    # Only files reaching ``start`` or past it can cover a record the consumer reads again.
    return Resume(start, Covered.of(f for f in files if f.last >= start), mark)

"""agents.archive: what a restarted archiver does with files whose offsets were never
committed (a crash between the write and the commit)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from agents.archive import Archiver
from app.detection.validation import Limits
from app.history.files import Archive
from app.history.rolling import PartitionBuffer
from app.history.schema import alert_row, payment_row
from app.worker.faust_app import settings
from tests.factories import alert, payment


def write_file(archive: Archive, partition: int, first: int, last: int) -> str:
    buffer = PartitionBuffer("payments", 10**9, 1e9, time.monotonic)
    for offset in range(first, last + 1):
        p = payment(txn_id=f"t{partition}-{offset}", ts_ms=1795940000000 + offset)
        raw = p.to_json()
        buffer.add(
            offset, p.ts_ms, len(raw), payment_row(raw, partition, offset, p.ts_ms, Limits())
        )
    (pending,), _ = buffer.roll()
    path = archive.file_path(
        "payments", pending.date, pending.hour, settings.topic_payments, partition, first, last
    )
    archive.write(path, pending.table)
    return path


def test_files_past_the_committed_offset_are_removed_and_the_others_kept(tmp_path: Path) -> None:
    archive = Archive.at(str(tmp_path))
    committed_0 = write_file(archive, 0, 0, 99)
    uncommitted_0 = write_file(archive, 0, 100, 149)  # written, then the worker died
    other_partition = write_file(archive, 1, 100, 149)  # not this worker's partition
    consumer: Any = None
    archiver = Archiver(archive, consumer)
    tp = TopicPartition(settings.topic_payments, 0)

    archiver.drop_uncommitted([tp], {tp: 100})

    left = {f.path for f in archive.files("payments")}
    assert left == {committed_0, other_partition}
    assert uncommitted_0 not in left


def test_a_file_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    archive = Archive.at(str(tmp_path))
    path = write_file(archive, 0, 0, 9)
    assert Path(path).exists()
    # No temporary file is left beside it.
    assert [p.name for p in Path(path).parent.iterdir()] == [Path(path).name]


def test_an_unreadable_alert_record_is_skipped_not_a_crash() -> None:
    bad = alert(amounts=("not-a-number",)).to_json()
    assert alert_row(bad, 0, 7, 1795940000000) is None
    assert alert_row(alert().to_json(), 0, 8, 1795940000000) is not None


def test_a_payment_whose_key_holds_a_card_number_is_not_archived_as_a_payment() -> None:
    # The worker dead-letters it (pan_in_key): the archive agrees, and keeps its DLQ record.
    p = payment(card_id="tok_1", ts_ms=1795940000000)
    raw = p.to_json()
    for key in (None, b"tok_1", b"t1"):
        assert payment_row(raw, 0, 0, p.ts_ms, Limits(), key) is not None
    for key in (b"4111111111111111", b"4111 1111 1111 1111", b"\\u0034111111111111111"):
        assert payment_row(raw, 0, 0, p.ts_ms, Limits(), key) is None

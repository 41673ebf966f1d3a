"""agents.archive: what a restarted archiver does with files whose offsets were never
committed (a crash between the write and the commit) or whose group is gone: it keeps
them and archives only what they lack."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pyarrow.parquet as pq
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from agents.archive import Archiver
from app.detection.validation import Limits
from app.history.files import Archive, ArchiveError
from app.history.rolling import PartitionBuffer
from app.history.schema import alert_row, payment_row
from app.worker.faust_app import settings
from tests.factories import alert, payment


def write_file(archive: Archive, partition: int, first: int, last: int) -> str:
    buffer = PartitionBuffer("payments", 10**9, 1e9, time.monotonic, partition=partition)
    for offset in range(first, last + 1):
        p = payment(txn_id=f"t{partition}-{offset}", ts_ms=1795940000000 + offset)
        buffer.add(offset, p.ts_ms, p.card_id.encode(), p.to_json())
    (pending,), _ = buffer.roll()
    path = archive.file_path(
        "payments", pending.date, pending.hour, settings.topic_payments, partition, first, last
    )
    archive.write(path, pending.table)
    return path


@dataclass
class Record:
    """What the archiver reads of an aiokafka ConsumerRecord."""

    offset: int
    value: bytes | None
    partition: int = 0
    key: bytes | None = None
    timestamp: int = 1795940000000


def record(partition: int, offset: int) -> Record:
    p = payment(txn_id=f"t{partition}-{offset}", ts_ms=1795940000000 + offset)
    return Record(offset, p.to_json(), partition, p.card_id.encode(), p.ts_ms)


class Consumer:
    """The part of AIOKafkaConsumer the archiver uses, with a group's committed offsets."""

    def __init__(self, committed: dict[TopicPartition, int]) -> None:
        self.offsets = dict(committed)
        self.positions: dict[TopicPartition, int] = {}
        self.paused: set[TopicPartition] = set()

    def pause(self, *tps: TopicPartition) -> None:
        self.paused.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused.difference_update(tps)

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.offsets.get(tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        self.offsets.update({tp: meta.offset for tp, meta in offsets.items()})


def archived_offsets(archive: Archive, partition: int) -> list[int]:
    found: list[int] = []
    for f in archive.files("payments"):
        if f.partition == partition:
            found += pq.read_table(f.path).column("kafka_offset").to_pylist()
    return sorted(found)


def replay(archiver: Archiver, tp: TopicPartition, end: int) -> None:
    """What the consumer reads after the assignment: from its position to ``end``."""
    start = archiver.consumer.positions[tp]
    archiver.add({tp: [record(tp.partition, n) for n in range(start, end)]})
    asyncio.run(archiver.roll_due(everything=True))


def test_files_past_the_committed_offset_are_kept_and_their_rows_not_archived_again(
    tmp_path: Path,
) -> None:
    archive = Archive.at(str(tmp_path))
    committed_0 = write_file(archive, 0, 0, 99)
    uncommitted_0 = write_file(archive, 0, 100, 149)  # written, then the worker died
    other_partition = write_file(archive, 1, 100, 149)  # not this worker's partition
    tp = TopicPartition(settings.topic_payments, 0)
    consumer = Consumer({tp: 100})
    archiver = Archiver(archive, cast(Any, consumer))

    asyncio.run(archiver.on_partitions_assigned([tp]))
    assert consumer.positions == {tp: 100}
    assert consumer.paused == set(), "fetching again, from there"
    replay(archiver, tp, 200)

    paths = {f.path for f in archive.files("payments")}
    assert {committed_0, uncommitted_0, other_partition} <= paths, "no file is deleted"
    assert archived_offsets(archive, 0) == list(range(200)), "each row once"
    assert consumer.offsets[tp] == 200


def test_a_group_without_offsets_resumes_from_the_archive_not_from_the_beginning(
    tmp_path: Path,
) -> None:
    archive = Archive.at(str(tmp_path))
    kept = [write_file(archive, 0, 0, 99), write_file(archive, 0, 100, 149)]
    tp = TopicPartition(settings.topic_payments, 0)
    consumer = Consumer({})  # the group was deleted, or its offsets expired
    archiver = Archiver(archive, cast(Any, consumer))

    asyncio.run(archiver.on_partitions_assigned([tp]))
    assert consumer.positions == {tp: 100}
    replay(archiver, tp, 180)

    assert set(kept) <= {f.path for f in archive.files("payments")}
    assert archived_offsets(archive, 0) == list(range(180))


def test_records_of_a_revoked_partition_are_not_archived(tmp_path: Path) -> None:
    archive = Archive.at(str(tmp_path))
    tp = TopicPartition(settings.topic_payments, 0)
    archiver = Archiver(archive, cast(Any, Consumer({})))
    asyncio.run(archiver.on_partitions_assigned([tp]))
    asyncio.run(archiver.on_partitions_revoked([tp]))
    # Fetched before the revocation, handed over after it: the next owner archives them.
    archiver.add({tp: [record(0, n) for n in range(10)]})
    asyncio.run(archiver.roll_due(everything=True))
    assert archive.files("payments") == []


def test_an_archive_that_cannot_be_listed_stops_the_archiver_instead_of_guessing(
    tmp_path: Path,
) -> None:
    (tmp_path / "payments").write_text("a file where the payments' directory should be")
    tp = TopicPartition(settings.topic_payments, 0)
    consumer = Consumer({tp: 100})
    archiver = Archiver(Archive.at(str(tmp_path)), cast(Any, consumer))

    with pytest.raises(ArchiveError):
        asyncio.run(archiver.on_partitions_assigned([tp]))
    # aiokafka swallows the listener's exception; the archiver's loop raises it.
    assert isinstance(archiver.failure, ArchiveError)
    assert consumer.positions == {}
    assert consumer.paused == {tp}, "no record from the committed offset alone"
    assert tp not in archiver.covered


def test_a_file_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    archive = Archive.at(str(tmp_path))
    path = write_file(archive, 0, 0, 9)
    assert Path(path).exists()
    # No temporary file is left beside it.
    assert [p.name for p in Path(path).parent.iterdir()] == [Path(path).name]


def test_payments_files_keep_dictionaries_for_repeating_text_only(tmp_path: Path) -> None:
    # A dictionary of unique txn ids, offsets or times is as long as the column: not built.
    path = write_file(Archive.at(str(tmp_path)), 0, 0, 99)
    chunks = pq.ParquetFile(path).metadata.row_group(0)
    dictionary = {
        chunks.column(i).path_in_schema: chunks.column(i).has_dictionary_page
        for i in range(chunks.num_columns)
    }
    assert dictionary["card_id"] and dictionary["currency"] and dictionary["merchant_id"]
    assert not dictionary["txn_id"]
    assert not dictionary["kafka_offset"] and not dictionary["ts"] and not dictionary["amount"]
    assert pq.read_table(path).num_rows == 100


def test_a_roll_splits_by_event_hour_whether_events_come_in_order_or_not() -> None:
    hour = 3_600_000
    start = 1795845600000  # 2026-11-28T06:00:00Z

    def files_of(order: list[int]) -> dict[tuple[str, int], list[str]]:
        buffer = PartitionBuffer("payments", 10**9, 1e9, time.monotonic)
        for offset, n in enumerate(order):
            p = payment(txn_id=f"t{n}", ts_ms=start + n * hour // 3)
            buffer.add(offset, start + 3 * hour, p.card_id.encode(), p.to_json())
        files, _ = buffer.roll()
        return {(f.date, f.hour): f.table.column("txn_id").to_pylist() for f in files}

    # Three payments an hour, in order (each hour's rows a run of the roll) and not.
    assert files_of(list(range(9))) == {
        ("2026-11-28", 6): ["t0", "t1", "t2"],
        ("2026-11-28", 7): ["t3", "t4", "t5"],
        ("2026-11-28", 8): ["t6", "t7", "t8"],
    }
    assert files_of([0, 3, 6, 1, 4, 7, 2, 5, 8]) == {
        ("2026-11-28", 6): ["t0", "t1", "t2"],
        ("2026-11-28", 7): ["t3", "t4", "t5"],
        ("2026-11-28", 8): ["t6", "t7", "t8"],
    }


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


def test_labels_are_archived_beside_payments_and_resume_from_their_own_files(
    tmp_path: Path,
) -> None:
    archive = Archive.at(str(tmp_path))
    labels_tp = TopicPartition(settings.topic_labels, 0)
    payments_tp = TopicPartition(settings.topic_payments, 0)
    consumer = Consumer({})
    archiver = Archiver(archive, cast(Any, consumer))
    assert archiver.kinds[settings.topic_labels] == "labels"
    asyncio.run(archiver.on_partitions_assigned([labels_tp, payments_tp]))
    fraud = b'{"label":"fraud","subject":"txn","txn_id":"t-1","source":"chargeback"}'
    given = [
        Record(0, fraud, key=b"txn:t-1"),
        Record(
            1,
            b'{"label":"not_fraud","txn_ids":["t-2"],"note":"4111 1111 1111 1111"}',
            key=b"case:c-1",
        ),
    ]
    archiver.add({labels_tp: given, payments_tp: [record(0, n) for n in range(5)]})
    asyncio.run(archiver.roll_due(everything=True))

    (labels,) = archive.files("labels")
    assert labels.topic == settings.topic_labels and (labels.first, labels.last) == (0, 1)
    rows = pq.read_table(labels.path).to_pylist()
    assert [(r["key"], r["label"]) for r in rows] == [
        ("txn:t-1", "fraud"),
        ("case:c-1", "not_fraud"),
    ]
    assert rows[1]["note"] == "**** **** **** 1111", "a card number never reaches the archive"
    assert archived_offsets(archive, 0) == list(range(5)), "payments as before"
    assert consumer.offsets[labels_tp] == 2

    # Restarted without the group's offsets: the labels' own file says where to resume.
    again = Consumer({})
    asyncio.run(Archiver(archive, cast(Any, again)).on_partitions_assigned([labels_tp]))
    assert again.positions == {labels_tp: 0}


def test_a_further_topic_is_archived_as_raw_audit_records_by_naming_its_kind(
    tmp_path: Path,
) -> None:
    archive = Archive.at(str(tmp_path))
    tp = TopicPartition("fraud.suppressions", 0)
    archiver = Archiver(archive, cast(Any, Consumer({})))
    # Lists and suppressions are archived for their audit, as any further topic would be.
    assert archiver.kinds["fraud.suppressions"] == "suppressions"
    assert archiver.kinds["fraud.lists"] == "lists"
    asyncio.run(archiver.on_partitions_assigned([tp]))
    archiver.add(
        {
            tp: [
                Record(0, b'{"rule_id":"r","until":"x"}', key=b"r|tok_1"),
                Record(1, None, key=b"r|tok_1"),
            ]
        }
    )
    asyncio.run(archiver.roll_due(everything=True))

    (audit,) = archive.files("suppressions")
    rows = pq.read_table(audit.path).to_pylist()
    assert [(r["key"], r["value"], r["kafka_offset"]) for r in rows] == [
        ("r|tok_1", '{"rule_id":"r","until":"x"}', 0),
        ("r|tok_1", None, 1),  # a tombstone, kept for the audit
    ]

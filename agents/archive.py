"""Every payment, alert and dead letter, archived to Parquet (``app.history``).

A consumer of its own (group ``<app id>-archive``), beside Faust's, so the archive never
holds detection back and detection never holds the archive back: each of them commits
its own offsets. Per partition, records gather in a buffer (``app.history.rolling``) that
rolls into files by size or time; the files are written whole (``app.history.files``),
and only then is the partition's offset committed. A crash or a rebalance before the
commit replays the records; the files they had produced are deleted when the partition is
assigned again (their first offset is at or past the committed one), so the replay writes
them afresh: no row is lost or archived twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from agents.decisions import LIMITS
from app.delivery.backoff import backoff_delay
from app.history.evidence import open_archive
from app.history.files import Archive
from app.history.rolling import PartitionBuffer
from app.history.schema import Row, alert_row, dead_letter_row, payment_row
from app.rules_admin.topic import bootstrap_servers
from app.worker.faust_app import app, settings
from app.worker.kafka_security import kafka_options
from app.worker.stats import stats

log = logging.getLogger(__name__)

# Records fetched at once; a buffer rolls by size well before memory matters.
MAX_FETCH_RECORDS = 2000


def archive_kinds() -> dict[str, str]:
    """Topic name -> archive directory."""
    return {
        settings.topic_payments: "payments",
        settings.topic_alerts: "alerts",
        settings.topic_dlq: "dlq",
    }


def row_of(kind: str, record: Any) -> Row | None:
    if kind == "payments":
        return payment_row(
            record.value, record.partition, record.offset, record.timestamp, LIMITS, record.key
        )
    if kind == "alerts":
        return alert_row(record.value, record.partition, record.offset, record.timestamp)
    return dead_letter_row(record.value, record.partition, record.offset, record.timestamp)


class Archiver(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, archive: Archive, consumer: AIOKafkaConsumer) -> None:
        self.archive, self.consumer = archive, consumer
        self.kinds = archive_kinds()
        self.buffers: dict[TopicPartition, PartitionBuffer] = {}

    def buffer(self, tp: TopicPartition) -> PartitionBuffer:
        found = self.buffers.get(tp)
        if found is None:
            found = self.buffers[tp] = PartitionBuffer(
                self.kinds[tp.topic],
                settings.archive_roll_bytes,
                settings.archive_roll_s,
                time.monotonic,
            )
        return found

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        # Uncommitted rows are read again by the partition's next owner.
        for tp in revoked:
            self.buffers.pop(tp, None)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        tps = list(assigned)
        if tps:
            await asyncio.to_thread(self.drop_uncommitted, tps, await self.committed(tps))

    async def committed(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: (await self.consumer.committed(tp)) or 0 for tp in tps}

    def drop_uncommitted(
        self, tps: list[TopicPartition], committed: dict[TopicPartition, int]
    ) -> None:
        """Delete files written for records the group has not committed: a crash came
        between their write and the commit, and the replay writes them again."""
        for kind in {self.kinds[tp.topic] for tp in tps}:
            for archived in self.archive.files(kind):
                tp = TopicPartition(archived.topic, archived.partition)
                if tp in committed and archived.first >= committed[tp]:
                    log.info("archive: removing uncommitted %s", archived.path)
                    self.archive.delete(archived.path)

    def add(self, records: dict[TopicPartition, list[Any]]) -> None:
        for tp, batch in records.items():
            buffer = self.buffer(tp)
            for record in batch:
                size = len(record.value or b"") + len(record.key or b"")
                buffer.add(record.offset, record.timestamp, size, row_of(buffer.kind, record))

    async def roll_due(self, *, everything: bool = False) -> None:
        for tp, buffer in list(self.buffers.items()):
            if buffer.empty or not (everything or buffer.due()):
                continue
            # Building the Arrow tables and writing them is seconds of work for a big roll:
            # in a thread, so the worker's event loop (detection) keeps its turns.
            files, commit = await asyncio.to_thread(buffer.roll)
            # On a failure the task restarts its consumer from the last commit, and what was
            # written is rewritten under the same names.
            await asyncio.to_thread(self.write, tp, files)
            await self.consumer.commit({tp: OffsetAndMetadata(commit, "")})
            stats.archived_rows += sum(f.table.num_rows for f in files)
            stats.archived_files += len(files)

    def write(self, tp: TopicPartition, files: list[Any]) -> None:
        for pending in files:
            path = self.archive.file_path(
                pending.kind,
                pending.date,
                pending.hour,
                tp.topic,
                tp.partition,
                pending.first,
                pending.last,
            )
            self.archive.write(path, pending.table)


async def _final_roll(archiver: Archiver) -> None:
    try:
        await asyncio.wait_for(archiver.roll_due(everything=True), timeout=10)
    except Exception:
        log.warning("archive: rows not archived at stop are archived at the next start")


async def archive_once(archiver: Archiver) -> None:
    records = await archiver.consumer.getmany(timeout_ms=1000, max_records=MAX_FETCH_RECORDS)
    if records:
        # Decoding rows is ~20 µs a record: off the event loop, as above.
        await asyncio.to_thread(archiver.add, records)
    await archiver.roll_due()


@app.task  # type: ignore[untyped-decorator]
async def archive_topics() -> None:
    if not settings.archive_enabled:
        return
    attempt = 0
    while True:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers(settings.broker),
            group_id=f"{settings.app_id}-archive",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **kafka_options(),
        )
        archiver = Archiver(open_archive(settings), consumer)
        try:
            await consumer.start()
            consumer.subscribe(list(archiver.kinds), listener=archiver)
            while True:
                await archive_once(archiver)
                attempt, stats.archive_failing_since = 0, None
        except asyncio.CancelledError:
            # A clean stop archives what it holds rather than leave it to the next start.
            await asyncio.shield(_final_roll(archiver))
            raise
        except Exception:
            attempt += 1
            if stats.archive_failing_since is None:
                stats.archive_failing_since = time.monotonic()
            delay = backoff_delay(attempt, base=0.5, cap=30.0)
            log.exception("archive failed; retrying in %.1f s (nothing is lost)", delay)
            await asyncio.sleep(delay)
        finally:
            await consumer.stop()

"""Every payment, alert, dead letter and label, archived to Parquet (``app.history``).

A consumer of its own (group ``<app id>-archive``), beside Faust's, so the archive never
holds detection back and detection never holds the archive back: each of them commits
its own offsets. Per partition, records gather in a buffer (``app.history.rolling``) that
rolls into files by size or time; the files are written whole (``app.history.files``),
and only then is the partition's offset committed. It all runs in a process of its own
(``agents.archive_child``), which the worker's ``archive_topics`` task starts and supervises
(below), so that the archive's CPU is not taken from the event loop that decides payments.

The archive never deletes a file. It once deleted, on assignment, every file at or past the
group's committed offset so that a replay could write it afresh; but a group without
offsets (expired after a week with the archive off, a new app id on the same archive, an
operator's reset) then cost every file, and history older than the topic's retention cannot
be written again. The files are now the source of truth and the committed offset a hint: on
assignment a partition resumes at the higher of its committed offset and the highest first
offset among its own files, and the replay drops every record a file already holds
(``app.history.resume``). A crash between a write and its commit, a deleted group and a
rewound one thus neither lose nor repeat a row; offsets that retention removed meanwhile
are skipped by the consumer's ``auto_offset_reset`` (earliest), and the files stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from agents.decisions import LIMITS
from app.delivery.backoff import Retry
from app.detection.pan import redact_text_cut
from app.history.evidence import open_archive
from app.history.files import Archive, ArchivedFile
from app.history.resume import Covered, Resume, resume
from app.history.rolling import PartitionBuffer
from app.rules_admin.topic import bootstrap_servers
from app.worker.faust_app import app, configured_log_level, settings
from app.worker.kafka_security import kafka_options
from app.worker.stats import stats

log = logging.getLogger(__name__)

# Records fetched at once; a buffer rolls by size well before memory matters.
MAX_FETCH_RECORDS = 2000
# A fetch's least bytes and longest wait at the broker (see archive_consumer). The wait is
# the loop's own turn (archive_once), which checks the rolls due.
FETCH_MIN_BYTES = 1024 * 1024
FETCH_MAX_WAIT_MS = 1000


def archive_kinds() -> dict[str, str]:
    """Topic name -> archive directory. Labels are few (a case closed, a chargeback): they
    ride the same consumer, and cost the payments path nothing. A further topic is archived
    by one more line here, ``settings.topic_x: "x",``: a kind that ``app.history.schema``
    does not name is kept as raw audit records (key, value text, partition, offset,
    timestamp), placed by Kafka timestamp, resumed from its files like the others."""
    return {
        settings.topic_payments: "payments",
        settings.topic_alerts: "alerts",
        settings.topic_dlq: "dlq",
        settings.topic_labels: "labels",
        # Raw audit records: who listed or snoozed what, until when, and why.
        settings.topic_lists: "lists",
        settings.topic_suppressions: "suppressions",
    }


class Archiver(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, archive: Archive, consumer: AIOKafkaConsumer) -> None:
        self.archive, self.consumer = archive, consumer
        self.kinds = archive_kinds()
        self.buffers: dict[TopicPartition, PartitionBuffer] = {}
        # The partitions this archiver owns, each with the rows its files already hold.
        # Records of a partition not in here (revoked, or assigned while the archive could
        # not be listed) are not archived.
        self.covered: dict[TopicPartition, Covered] = {}
        # Held while records are added and rolled, and by the rebalance callbacks: the
        # partitions' next owner lists the files once this one has written and committed
        # them, and no batch is added while the partitions change hands.
        self.busy = asyncio.Lock()
        # aiokafka logs and swallows a listener's exception; the loop raises it instead.
        self.failure: Exception | None = None

    def buffer(self, tp: TopicPartition) -> PartitionBuffer:
        found = self.buffers.get(tp)
        if found is None:
            found = self.buffers[tp] = PartitionBuffer(
                self.kinds[tp.topic],
                settings.archive_roll_bytes,
                settings.archive_roll_s,
                time.monotonic,
                partition=tp.partition,
                limits=LIMITS,
            )
        return found

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        # Uncommitted rows are read again by the partition's next owner.
        async with self.busy:
            for tp in revoked:
                self.buffers.pop(tp, None)
                self.covered.pop(tp, None)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        tps = list(assigned)
        if not tps:
            return
        # aiokafka starts fetching from the committed offsets while this runs: paused, the
        # partitions return no record until they are at their resume points. (Paused for
        # good if the archive cannot be listed; the loop then restarts the consumer.)
        self.consumer.pause(*tps)
        async with self.busy:
            try:
                committed = {tp: await self.consumer.committed(tp) for tp in tps}
                listed = await asyncio.to_thread(self.archived, tps)
                for tp in tps:
                    self.resume(tp, resume(listed[tp], committed[tp]), committed[tp])
            except Exception as exc:
                self.failure = exc
                raise
        self.consumer.resume(*tps)

    def archived(self, tps: list[TopicPartition]) -> dict[TopicPartition, list[ArchivedFile]]:
        """The files of each partition in ``tps``: one listing of each kind's whole tree,
        as a partition's files are spread over its event hours."""
        found: dict[TopicPartition, list[ArchivedFile]] = {tp: [] for tp in tps}
        for kind in {self.kinds[tp.topic] for tp in tps}:
            for archived in self.archive.files(kind):
                files = found.get(TopicPartition(archived.topic, archived.partition))
                if files is not None:
                    files.append(archived)
        return found

    def resume(self, tp: TopicPartition, point: Resume, committed: int | None) -> None:
        if point.offset is not None:
            self.consumer.seek(tp, point.offset)
        if point.offset != committed:
            log.info(
                "archive: %s-%d resumes at offset %s from its files (committed: %s)",
                tp.topic,
                tp.partition,
                point.offset,
                committed,
            )
        self.covered[tp] = point.covered

    def add(self, records: dict[TopicPartition, list[Any]]) -> None:
        """Gather a fetch's records as received; they are read when their partition rolls."""
        for tp, batch in records.items():
            if tp in self.covered:  # else not this archiver's partition (any more)
                self.buffer(tp).extend(batch)

    async def roll_due(self, *, everything: bool = False) -> None:
        for tp, buffer in list(self.buffers.items()):
            if buffer.empty or not (everything or buffer.due()):
                continue
            # Reading a big roll's records and writing its files is a second of work or more:
            # in a thread, so the worker's event loop (detection) keeps its turns.
            files, commit = await asyncio.to_thread(buffer.roll, self.covered.get(tp))
            # On a failure the task restarts its consumer, which resumes past what was
            # written (app.history.resume).
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
        async with archiver.busy:
            await asyncio.wait_for(archiver.roll_due(everything=True), timeout=10)
    except Exception:
        log.warning("archive: rows not archived at stop are archived at the next start")


async def archive_once(archiver: Archiver) -> None:
    records = await archiver.consumer.getmany(timeout_ms=1000, max_records=MAX_FETCH_RECORDS)
    async with archiver.busy:
        if archiver.failure is not None:
            # The partitions could not be resumed (the archive could not be listed): start
            # over, with backoff, rather than archive from the committed offsets alone.
            raise archiver.failure
        archiver.add(records)  # a few list appends: read only when they roll
        await archiver.roll_due()


def archive_consumer() -> AIOKafkaConsumer:
    """The archive's own consumer (group ``<app id>-archive``), not yet started.

    Nothing waits on the archive but its rolls (minutes apart): the broker holds each fetch
    until it has ``FETCH_MIN_BYTES`` for it or ``FETCH_MAX_WAIT_MS`` passed, so a worker at
    1 000 payments/s wakes for the archive about once a second, not once a produce request.
    """
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers(settings.broker),
        group_id=f"{settings.app_id}-archive",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_min_bytes=FETCH_MIN_BYTES,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        **kafka_options(),
    )


def _archive_failing(_exc: Exception) -> None:
    if stats.archive_failing_since is None:
        stats.archive_failing_since = time.monotonic()


# Loudly (ERROR, with the redacted traceback that names the S3 or Kafka error): nothing is
# lost, the group's offsets stay where the last file was written.
archive_retry = Retry(
    "archive failed, nothing is lost",
    base=0.5,
    cap=30.0,
    log=log,
    level=logging.ERROR,
    traceback=True,
    on_failure=_archive_failing,
)


async def archive_session() -> None:
    """One consumer, archiving until it fails (raises) or is cancelled."""
    consumer = archive_consumer()
    archiver = Archiver(open_archive(settings), consumer)
    try:
        await consumer.start()
        consumer.subscribe(list(archiver.kinds), listener=archiver)
        while True:
            await archive_once(archiver)
            archive_retry.recovered()  # progress: the next failure is a new outage
            stats.archive_failing_since = None
            stats.archive_turns += 1
    except asyncio.CancelledError:
        # A clean stop archives what it holds rather than leave it to the next start.
        await asyncio.shield(_final_roll(archiver))
        raise
    finally:
        await consumer.stop()


# The archive runs in a process of its own (``agents.archive_child``), supervised from here.
# Everything above runs in that process; the worker's event loop keeps its core for the
# decisions (issue 21: the consumer's per-record unpacking alone was ~5 % of it).
ARCHIVE_CHILD = "agents.archive_child"
# A clean stop waits this long for the child's final roll (10 s at most, then its
# consumer's leave) before it kills the child; what that roll held is archived next start.
CHILD_STOP_S = 30.0
# The longest line read from the child, well above the longest it writes (a log message of
# 8 000 characters and a traceback of 16 000, each escaped by JSON to 12 bytes at most).
CHILD_LINE_BYTES = 1024 * 1024


class ArchiveProcessDied(Exception):
    """The archive's process exited while the worker ran (a crash, OOM, a kill)."""


# The child's own failures are retried in it (archive_retry); a death is retried here, with
# the same policy, and shows in /healthz as the archive failing until the new child archives.
child_retry = Retry(
    "archive process died, nothing is lost",
    base=0.5,
    cap=30.0,
    log=log,
    level=logging.ERROR,
    on_failure=_archive_failing,
)


@dataclass
class ChildProgress:
    """What one archive process reported so far: its counters start at zero, the worker's
    go on across its restarts."""

    pid: int
    rows: int = 0
    files: int = 0

    def take(self, report: dict[str, Any]) -> None:
        rows, files = int(report["rows"]), int(report["files"])
        stats.archived_rows += rows - self.rows
        stats.archived_files += files - self.files
        self.rows, self.files = rows, files
        failing_s = report["failing_s"]
        if failing_s is not None:
            if stats.archive_failing_since is None:
                stats.archive_failing_since = time.monotonic() - float(failing_s)
        elif int(report["turns"]) > 0:  # it archives (a child still starting says nothing)
            stats.archive_failing_since = None
            child_retry.recovered()

    def log(self, entry: dict[str, Any]) -> None:
        """A log record of the child, through the worker's own loggers and handlers: the same
        format (with the child's pid) and the same destination as the worker's lines."""
        level = int(entry["level"])
        logger = logging.getLogger(str(entry["name"]))
        if not logger.isEnabledFor(level):
            return
        created, path = float(entry["created"]), str(entry.get("pathname", ""))
        record = logging.makeLogRecord(
            {
                "name": logger.name,
                "levelno": level,
                "levelname": logging.getLevelName(level),
                "msg": str(entry["msg"]),
                "exc_text": entry.get("exc") or None,
                "created": created,
                "msecs": (created - int(created)) * 1000,
                "process": self.pid,
                "processName": "archive",
                "pathname": path,
                "filename": os.path.basename(path),
                "module": os.path.splitext(os.path.basename(path))[0],
                "lineno": int(entry.get("lineno", 0)),
                "funcName": str(entry.get("funcName", "")),
            }
        )
        logger.handle(record)

    async def read(self, lines: asyncio.StreamReader) -> None:
        """The child's lines until it closes its end (it exited)."""
        while True:
            try:
                line = await lines.readline()
            except ValueError:  # longer than CHILD_LINE_BYTES: dropped (a bug of the child)
                log.error("archive: process %d wrote a line too long, dropped", self.pid)
                continue
            if not line:
                return
            try:
                message = json.loads(line)
                if "progress" in message:
                    self.take(message["progress"])
                else:
                    self.log(message["log"])
            except (ValueError, TypeError, KeyError):
                # Not its protocol (stray output of a library): shown, not obeyed.
                log.warning(
                    "archive: process %d: %s",
                    self.pid,
                    redact_text_cut(line.decode(errors="replace").rstrip(), slice(500)),
                )


def exit_reason(code: int) -> str:
    """``code 1``, ``signal SIGKILL``: how a process ended, from its return code."""
    if code >= 0:
        return f"code {code}"
    try:
        return f"signal {signal.Signals(-code).name}"
    except ValueError:
        return f"signal {-code}"


async def stop_child(child: asyncio.subprocess.Process) -> int:
    """Ask the child to stop (its final roll), wait ``CHILD_STOP_S``, then kill it."""
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(child.wait(), CHILD_STOP_S)
    except TimeoutError:
        log.error("archive: process %d did not stop in %.0f s, killed", child.pid, CHILD_STOP_S)
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        return await child.wait()


async def archive_child_session(command: list[str] | None = None) -> None:
    """One archive process, supervised until it exits (raises) or the worker stops.

    Spawned from the event loop's thread: the child's ``PR_SET_PDEATHSIG`` fires when the
    thread that forked it ends, so a SIGKILLed worker takes its archive process along.
    """
    command = command or [
        sys.executable,
        "-m",
        ARCHIVE_CHILD,
        str(os.getpid()),
        str(configured_log_level()),
    ]
    child = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        limit=CHILD_LINE_BYTES,
    )
    assert child.stdout is not None
    progress = ChildProgress(child.pid)
    reading = asyncio.create_task(progress.read(child.stdout))
    try:
        code = await child.wait()
    except asyncio.CancelledError:
        # A clean stop: the child archives what it holds (as the loop did in the worker).
        await asyncio.shield(stop_child(child))
        raise
    finally:
        # Its last lines (the final roll's count, why it died), then nothing is left behind.
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(reading), 5)
        reading.cancel()
    log.error("archive: process %d exited (%s)", child.pid, exit_reason(code))
    raise ArchiveProcessDied(f"exit code {code}")


@app.task  # type: ignore[untyped-decorator]
async def archive_topics() -> None:
    if settings.archive_enabled:
        await child_retry.run(archive_child_session)

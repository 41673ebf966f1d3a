"""Reading and publishing the lists and suppressions topics (the worker's follower, the CLI
and the HTTP API).

Writers only publish, as for rules: a worker's lists change only when its follower reads
the record back, so every worker sees the same changes in the same order. One consumer
follows both topics (no consumer group: every worker reads all of both) into one
:class:`ListBook`.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from app.detection.lists import LIST, Entry, ListBook, ListError, parse_entry
from app.detection.models import iso_from_ms
from app.rules_admin.topic import (
    BUSY_POLL_MS,
    FOLLOW_POLL_MS,
    LOADING_REPORT_S,
    TopicUnreadable,
    topic_partitions,
)
from app.worker.kafka_security import kafka_options

log = logging.getLogger(__name__)

# An import file holds at most this many entries (one publish; the store's bound still holds).
MAX_IMPORT_ENTRIES = 100_000
MISSING_RECHECK_S = 30.0


async def follow(
    bootstrap: str,
    topics: dict[str, str],
    book: ListBook,
    on_change: Callable[[str], Awaitable[None] | None] | None = None,
    stop: asyncio.Event | None = None,
    require: bool = False,
) -> None:
    """Fold the lists and suppressions topics (``topics``: topic name -> LIST or
    SUPPRESSION) into ``book``, then keep following them. ``book.loaded`` is set once every
    partition of both has been read to the end offset it had at start. A topic that does not
    exist holds no entries (``require``: raise TopicUnreadable instead); then this returns
    after ``MISSING_RECHECK_S`` so that the caller, following again, finds it once created."""
    partitions, missing = await _existing(bootstrap, topics, require)
    started = time.monotonic()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **kafka_options(),
    )
    try:
        await consumer.start()
        consumer.assign(partitions)
        end = await consumer.end_offsets(partitions) if partitions else {}
        if partitions:
            await consumer.seek_to_beginning(*partitions)
        await _tell(on_change, "connected")
        unread = {} if book.loaded.is_set() else dict(end)
        reported_at = time.monotonic()
        while stop is None or not stop.is_set():
            if missing and not unread and time.monotonic() - started >= MISSING_RECHECK_S:
                return  # the caller follows again, finding the topics that exist by then
            if unread or not book.loaded.is_set():
                await _forget_read(consumer, unread, book)
                if not unread:
                    book.loaded.set()
                    log.info("lists loaded: %d entries", book.size())
                elif time.monotonic() - reported_at >= LOADING_REPORT_S:
                    reported_at = time.monotonic()
                    where = ", ".join(
                        f"{t}[{p}] at {a} of {e}" for (t, p), (a, e) in book.unread.items()
                    )
                    log.warning(
                        "lists topics not read to their ends yet; detection waits: %s", where
                    )
            poll_ms = FOLLOW_POLL_MS if stop is None and not unread else BUSY_POLL_MS
            if not partitions:
                await asyncio.sleep(poll_ms / 1000)
                continue
            batch = await consumer.getmany(timeout_ms=poll_ms)
            for tp, messages in batch.items():
                for message in messages:
                    outcome = book.apply(topics[tp.topic], message.key, message.value)
                    log.info("%s offset %d: %s", tp.topic, message.offset, outcome)
                    await _tell(on_change, outcome)
    finally:
        await consumer.stop()


async def _existing(
    bootstrap: str, topics: dict[str, str], require: bool
) -> tuple[list[TopicPartition], list[str]]:
    """The partitions of the topics that exist, and the topics that do not."""
    partitions: list[TopicPartition] = []
    missing: list[str] = []
    for topic in topics:
        try:
            partitions.extend(await topic_partitions(bootstrap, topic))
        except TopicUnreadable:
            if require:
                raise
            missing.append(topic)
    if missing:
        # A deployment that has not created them yet has no lists: detection goes on.
        log.warning(
            "topic %s does not exist: no entries from it; looking again in %.0f s",
            " and ".join(repr(t) for t in missing),
            MISSING_RECHECK_S,
        )
    return partitions, missing


async def _forget_read(
    consumer: AIOKafkaConsumer, unread: dict[TopicPartition, int], book: ListBook
) -> None:
    """Drop from ``unread`` the partitions read to their end offset at start (the position
    says so, as in ``app.rules_admin.topic``)."""
    for tp in list(unread):
        position = await consumer.position(tp)
        if position >= unread[tp]:
            del unread[tp]
            book.unread.pop((tp.topic, tp.partition), None)
        else:
            book.unread[(tp.topic, tp.partition)] = (position, unread[tp])


async def _tell(on_change: Callable[[str], Awaitable[None] | None] | None, outcome: str) -> None:
    if on_change is not None:
        result = on_change(outcome)
        if result is not None:
            await result


async def read_all(bootstrap: str, topics: dict[str, str], max_entries: int) -> ListBook:
    """The lists and suppressions in force now, as a worker would fold them."""
    book = ListBook(max_entries=max_entries)
    stop = asyncio.Event()
    task = asyncio.create_task(follow(bootstrap, topics, book, stop=stop, require=True))
    waiter = asyncio.create_task(book.loaded.wait())
    done, _ = await asyncio.wait({task, waiter}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    await task
    if waiter not in done:
        raise TopicUnreadable(f"could not read topics {', '.join(topics)} within 30 s")
    return book


def over_bound(book: ListBook, new: list[Entry], max_entries: int) -> str | None:
    """Why publishing ``new`` would pass the bound on entries, or None."""
    added = {(e.kind, e.scope, e.value) for e in new}
    fresh = sum(1 for kind, scope, value in added if value not in book.scopes(kind).get(scope, {}))
    if fresh and book.size() + fresh > max_entries:
        return (
            f"entries: {book.size()} are held and {fresh} would be added, over the limit"
            f" {max_entries} (FRAUD_MAX_LIST_ENTRIES)"
        )
    return None


def load_entry_file(path: str | Path, list_name: str, by: str, added_ms: int) -> list[Entry]:
    """List entries from a CSV file with a header: ``value,until,reason`` (``until`` may be
    empty: until removed; ``reason`` empty: the file's name). ListError names the line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ListError("file", f"{path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ListError("file", f"cannot read {path}: {exc.strerror}") from None
    rows = csv.DictReader(io.StringIO(text))
    if rows.fieldnames is None or "value" not in rows.fieldnames:
        raise ListError("file", f"{path} has no header line naming a 'value' column")
    unknown = set(rows.fieldnames) - {"value", "until", "reason"}
    if unknown:
        raise ListError("file", f"{path}: unknown columns {sorted(unknown)}")
    entries: list[Entry] = []
    for line, row in enumerate(rows, start=2):
        if len(entries) >= MAX_IMPORT_ENTRIES:
            raise ListError("file", f"{path} holds more than {MAX_IMPORT_ENTRIES} entries")
        body = {
            "list": list_name,
            "value": row.get("value"),
            "until": row.get("until") or None,
            "reason": row.get("reason") or f"imported from {Path(path).name}",
            "by": by,
            "added_at": iso_from_ms(added_ms),
        }
        try:
            entries.append(parse_entry(LIST, body))
        except ListError as exc:
            raise ListError(f"line {line}.{exc.field}", exc.problem) from None
    return entries


_DURATION = re.compile(r"^(\d{1,7})([smhd])$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration(where: str, text: object) -> int:
    """Milliseconds of a duration written ``90s``, ``30m``, ``2h`` or ``7d``."""
    found = _DURATION.match(text) if isinstance(text, str) else None
    if found is None or int(found[1]) == 0:
        raise ListError(where, f"{text!r} is not a duration such as 90s, 30m, 2h or 7d")
    return int(found[1]) * _UNIT_MS[found[2]]


def new_entry(
    kind: str,
    scope: object,
    value: object,
    *,
    until: object = None,
    lasting: object = None,
    reason: object = None,
    by: object = None,
    now_ms: int,
) -> Entry:
    """An entry a user asks for (CLI or HTTP): ``until`` an ISO time, or ``lasting`` a
    duration from now (wall clock; the entry is then judged by payments' event time), or
    neither (until removed). ListError names the field."""
    if until is not None and lasting is not None:
        raise ListError("until", "give an end time or a duration ('for'), not both")
    if lasting is not None:
        until = iso_from_ms(now_ms + parse_duration("for", lasting))
    scope_name, value_name = ("list", "value") if kind == LIST else ("rule_id", "key")
    body = {
        scope_name: scope,
        value_name: value,
        "until": until,
        "reason": reason,
        "by": by,
        "added_at": iso_from_ms(now_ms),
    }
    entry = parse_entry(kind, body)
    if entry.until_ms is not None and entry.until_ms <= now_ms:
        raise ListError("until", f"{until} is not in the future")
    return entry

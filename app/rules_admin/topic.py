"""Reading and publishing the rules topic (used by the worker, the CLI and the HTTP API).

Writers only publish: no interface changes a worker's rules directly, so every
worker sees the same sequence of changes in the same order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from app.detection.rulebook import RuleBook
from app.detection.rules import Rule, RuleError, parse_rule
from app.worker.kafka_security import kafka_options

log = logging.getLogger(__name__)

# While the rules topic is read at start, where it stands is logged this often.
LOADING_REPORT_S = 10.0
# How long one poll of the rules topic waits for records. A fetched record is handed over
# at once whatever this is: it only says how often the loop wakes up with nothing to do.
# While the topic is read at start (the end can be reached with no record handed over) or
# when a ``stop`` event may end it (the CLI's read_all, tests), a tenth of a second; a
# worker's follower, loaded and running until cancelled, once a second.
FOLLOW_POLL_MS = 1000
BUSY_POLL_MS = 100


class TopicUnreadable(RuntimeError):
    """A topic that does not exist, or could not be read to its end in time; the message
    names it."""


def bootstrap_servers(broker_url: str) -> str:
    return ",".join(url.split("://", 1)[1] for url in broker_url.split(";"))


def load_rule_file(path: str | Path) -> list[Rule]:
    """Rules from a JSON or YAML file holding one rule or a list; RuleError names the field."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RuleError("file", f"{path} is not UTF-8 text (byte {exc.start})") from None
    try:
        body = yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        raise RuleError("file", f"{path} is neither JSON nor YAML: {yaml_problem(exc)}") from None
    except RecursionError:
        raise RuleError("file", f"{path} is nested too deeply") from None
    items = body if isinstance(body, list) else [body]
    rules = []
    for index, item in enumerate(items):
        try:
            rules.append(parse_rule(item))
        except RuleError as exc:
            where = f"rule[{index}]." if len(items) > 1 else ""
            raise RuleError(where + exc.field, exc.problem) from None
    return rules


def yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's complaint on one line: what it found and where (its own text quotes the
    offending line under it)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if problem and mark is not None:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())


async def publish(bootstrap: str, topic: str, records: list[tuple[str, bytes | None]]) -> None:
    """Publish (rule_id, value) records and wait until Kafka has them all."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **kafka_options())
    try:
        await producer.start()  # inside: a start that fails leaves connections to close
        for rule_id, value in records:
            await (await producer.send(topic, value, key=rule_id.encode()))
    finally:
        await producer.stop()


async def follow(
    bootstrap: str,
    topic: str,
    book: RuleBook,
    on_change: Callable[[str], Awaitable[None] | None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Fold the whole rules topic into ``book``, then keep following it.

    ``book.loaded`` is set once the records present at start have been applied: once the
    consumer's position in every partition has reached the end offset it had at start.
    Without ``stop`` it runs until cancelled.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **kafka_options(),
    )
    try:
        await consumer.start()  # inside: a start that fails leaves connections to close
        partitions = await topic_partitions(bootstrap, topic)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        if on_change is not None:
            result = on_change("connected")
            if result is not None:
                await result
        # A reconnect reads the topic again but the rules in force stay loaded meanwhile.
        unread = {} if book.loaded.is_set() else dict(end)
        reported_at = time.monotonic()
        while stop is None or not stop.is_set():
            if unread:
                await _forget_read(consumer, unread, book)
                if not unread:
                    book.loaded.set()
                    names = ", ".join(r.rule_id for r in book.all()) or "none"
                    log.info("rules loaded: %s", names)
                elif time.monotonic() - reported_at >= LOADING_REPORT_S:
                    reported_at = time.monotonic()
                    # Detection waits for this (/readyz too): say where it is stuck.
                    log.warning(
                        "rules topic %s not read to its end offsets yet; detection waits: %s",
                        topic,
                        ", ".join(
                            f"partition {p} at {at} of {e}" for p, (at, e) in book.unread.items()
                        ),
                    )
            poll_ms = FOLLOW_POLL_MS if stop is None and not unread else BUSY_POLL_MS
            batch = await consumer.getmany(timeout_ms=poll_ms)
            for messages in batch.values():
                for message in messages:
                    outcome = book.apply(message.key, message.value)
                    if outcome.startswith("applied ") and message.key:
                        book.published_ms[message.key.decode()] = message.timestamp
                    log.info("rules topic offset %d: %s", message.offset, outcome)
                    if on_change is not None:
                        result = on_change(outcome)
                        if result is not None:
                            await result
    finally:
        await consumer.stop()


async def _forget_read(
    consumer: AIOKafkaConsumer, unread: dict[TopicPartition, int], book: RuleBook
) -> None:
    """Drop from ``unread`` the partitions read to their end offset at start.

    The position, not the last record seen, says so: a partition whose records were all
    deleted (log start == end > 0) is handed no record at all, and one that ends in offsets
    no consumer is handed (a transaction marker, a batch's records compacted away) has no
    record at end - 1; the consumer's position starts at, or moves past, those all the same.
    """
    for tp in list(unread):
        position = await consumer.position(tp)
        if position >= unread[tp]:
            del unread[tp]
            book.unread.pop(tp.partition, None)
        else:
            book.unread[tp.partition] = (position, unread[tp])


async def topic_partitions(bootstrap: str, topic: str) -> list[TopicPartition]:
    """All partitions of ``topic``, from the brokers' own metadata."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_options())
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if described.get("error_code") or not described.get("partitions"):
        raise TopicUnreadable(f"topic {topic!r} does not exist")
    return [TopicPartition(topic, p["partition"]) for p in described["partitions"]]


async def read_all(bootstrap: str, topic: str) -> RuleBook:
    """The rules in force now, as a worker would fold them."""
    book = RuleBook()
    stop = asyncio.Event()
    task = asyncio.create_task(follow(bootstrap, topic, book, stop=stop))
    waiter = asyncio.create_task(book.loaded.wait())
    done, _ = await asyncio.wait({task, waiter}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    await task  # re-raises a failure to read the topic
    if waiter not in done:
        raise TopicUnreadable(f"could not read rules topic {topic!r} within 30 s")
    return book


def with_status(rule: Rule, status: str) -> dict[str, Any]:
    """The next version of ``rule`` with ``status`` (pause/activate publish a new version)."""
    body = rule.to_json()
    body["status"] = status
    body["version"] = rule.version + 1
    return body

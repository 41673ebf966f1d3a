"""app.rules_admin.topic: rule files (JSON or YAML), the next version a status change
publishes, and when the follower has read the rules topic to its end."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition

from app.detection.rulebook import RuleBook
from app.detection.rules import SEED_RULE, AggregateRule, RuleError
from app.rules_admin import topic
from app.rules_admin.topic import load_rule_file, with_status
from tests.factories import rule_body

SHIPPED_RULES = Path(__file__).resolve().parents[3] / "app" / "rules_admin" / "default_rules.yaml"


def test_rule_files_hold_one_rule_or_a_list_in_json_or_yaml(tmp_path: Path) -> None:
    single = tmp_path / "one.json"
    single.write_text(json.dumps(rule_body()))
    assert load_rule_file(single) == [SEED_RULE]
    shipped = load_rule_file(SHIPPED_RULES)
    assert len(shipped) >= 4
    assert {r.aggregate.name for r in shipped if isinstance(r, AggregateRule)} == {
        "count",
        "sum",
        "distinct_count",
    }
    broken = tmp_path / "broken.yaml"
    broken.write_text("- rule_id: a\n  version: 1\n  window: 5\n  threshold: 2\n- rule_id: b\n")
    with pytest.raises(RuleError) as info:
        load_rule_file(broken)
    assert info.value.field == "rule[1].version"


def test_an_unparsable_or_undecodable_file_is_refused_in_one_line(tmp_path: Path) -> None:
    garbled = tmp_path / "garbled.yaml"
    garbled.write_text("rule_id: a\nversion: [1\n")
    with pytest.raises(RuleError) as info:
        load_rule_file(garbled)
    assert info.value.field == "file"
    assert "\n" not in str(info.value)
    assert f"{garbled} is neither JSON nor YAML" in str(info.value)
    assert "(line 3, column 1)" in str(info.value)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("description: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(RuleError) as info:
        load_rule_file(latin1)
    assert (info.value.field, info.value.problem) == (
        "file",
        f"{latin1} is not UTF-8 text (byte 16)",
    )


def test_pause_publishes_the_next_version() -> None:
    body = with_status(SEED_RULE, "paused")
    assert (body["version"], body["status"]) == (2, "paused")


class FakeRulesConsumer:
    """A rules topic of three partitions as aiokafka's consumer shows it: 0 holds the seed
    rule; 1 was emptied (log start == end == 5: the position starts at its end); 2 ends in a
    transaction marker at offset 1 (no record is ever handed out, the position moves past)."""

    def __init__(self, book: RuleBook) -> None:
        self.book = book
        self.tps = [TopicPartition("rules", p) for p in range(3)]
        self.positions: dict[TopicPartition, int] = dict(zip(self.tps, (0, 5, 1), strict=True))
        self.fetches: list[dict[TopicPartition, list[Any]]] = [
            {
                self.tps[0]: [
                    SimpleNamespace(
                        key=b"high-value-burst", value=SEED_RULE.to_bytes(), offset=0, timestamp=1
                    )
                ]
            },
            {},  # the marker's fetch: nothing handed out, partition 2's position moves to 2
        ]
        self.seen: list[dict[int, tuple[int, int]]] = []

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def assign(self, tps: list[TopicPartition]) -> None: ...
    async def seek_to_beginning(self, *tps: TopicPartition) -> None: ...

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict(zip(self.tps, (1, 5, 2), strict=True))

    async def position(self, tp: TopicPartition) -> int:
        position: int = self.positions[tp]
        return position

    async def getmany(self, timeout_ms: int) -> dict[TopicPartition, list[Any]]:
        self.seen.append(dict(self.book.unread))
        batch = self.fetches.pop(0) if self.fetches else {}
        for tp, records in batch.items():
            self.positions[tp] = records[-1].offset + 1
        if not self.fetches:
            self.positions[self.tps[2]] = 2
        await asyncio.sleep(0)
        return batch


def test_a_partition_is_read_when_its_position_reaches_the_end_offset_not_a_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    book = RuleBook()
    consumer = FakeRulesConsumer(book)
    monkeypatch.setattr(topic, "AIOKafkaConsumer", lambda **_: consumer)

    async def partitions(bootstrap: str, name: str) -> list[TopicPartition]:
        return consumer.tps

    monkeypatch.setattr(topic, "topic_partitions", partitions)

    async def main() -> None:
        stop = asyncio.Event()
        following = asyncio.create_task(topic.follow("kafka:9092", "rules", book, stop=stop))
        await asyncio.wait_for(book.loaded.wait(), 5)
        stop.set()
        await following

    asyncio.run(main())
    assert [r.rule_id for r in book.all()] == ["high-value-burst"] and book.unread == {}
    # The emptied partition was read at once; the others waited for their positions.
    assert consumer.seen[0] == {0: (0, 1), 2: (1, 2)}

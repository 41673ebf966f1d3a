"""app/web/cluster.py: which worker owns a card (Kafka's partitioner over the raw card bytes)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from aiokafka.partitioner import murmur2

from app.detection.keys import card_partition
from app.web import (
    cluster,
)
from app.worker.faust_app import app as faust_app
from tables import card_state
from tests.unit.web.fakes import CARD


def test_faust_table_route_would_hash_the_json_key_and_pick_another_partition() -> None:
    # Faust's table_route hashes the key as the table's changelog serializes it.
    json_key = card_state.changelog_topic.prepare_key(CARD, None)[0]
    assert json_key == b'"' + CARD.encode() + b'"'
    cards = [f"tok_{i:016x}" for i in range(64)]
    differ = [
        c
        for c in cards
        if (murmur2(card_state.changelog_topic.prepare_key(c, None)[0]) & 0x7FFFFFFF) % 8
        != card_partition(c, 8)
    ]
    assert len(differ) > 32, "for most cards the JSON key lands elsewhere: table_route misroutes"


def test_locate_card_finds_the_owner_of_the_cards_changelog_partition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = card_state.changelog_topic.get_topic_name()
    me = cluster.my_url()
    other = "http://127.0.0.1:1"
    partition = card_partition(CARD, 4)
    mine = [partition, (partition + 1) % 4]
    theirs = [p for p in range(4) if p not in mine]
    metadata = {me: {topic: mine}, other: {topic: theirs}}
    monkeypatch.setattr(
        faust_app, "_router", SimpleNamespace(table_metadata=lambda name: metadata), raising=False
    )
    monkeypatch.setattr(type(faust_app), "router", property(lambda self: self._router))
    assert cluster.locate_card(CARD) == cluster.CardOwner(partition, me, True)
    metadata[me], metadata[other] = {topic: theirs}, {topic: mine}
    assert cluster.locate_card(CARD) == cluster.CardOwner(partition, other, False)
    metadata.clear()
    assert cluster.locate_card(CARD).owner is None

"""app.detection.keys: the card partition and repartition-topic keys."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from app.detection.keys import card_partition, group_record_key, murmur2, split_group_record_key


def test_card_partition_is_kafkas_default_partitioner_over_the_raw_card_bytes() -> None:
    partitioner = DefaultPartitioner()
    rng = random.Random(5)
    for partitions in (1, 3, 4, 8, 12):
        for _ in range(200):
            card = "tok_" + "".join(rng.choices("0123456789abcdef", k=16))
            expected = partitioner(card.encode(), list(range(partitions)), list(range(partitions)))
            assert card_partition(card, partitions) == expected


def test_murmur2_is_aiokafkas_for_every_length_and_byte() -> None:
    rng = random.Random(7)
    for length in range(70):
        for _ in range(50):
            data = rng.randbytes(length)
            assert murmur2(data) == aiokafka_murmur2(data), data
    assert murmur2(bytes(range(256))) == aiokafka_murmur2(bytes(range(256)))


def test_group_record_keys_round_trip_and_other_keys_are_refused() -> None:
    record_key = group_record_key(("device_id", "ip"), "d-1|198.51.100.4")
    assert split_group_record_key(record_key.encode()) == (("device_id", "ip"), "d-1|198.51.100.4")
    assert split_group_record_key(record_key) == (("device_id", "ip"), "d-1|198.51.100.4")
    for not_a_group_key in (b"tok_1", b"\x1fno-group", b""):
        with pytest.raises(ValueError):
            split_group_record_key(not_a_group_key)

"""How payments are keyed and partitioned: the card partition and repartition-topic keys.

``payments.raw`` is keyed by the raw card-id bytes and partitioned by Kafka's default
partitioner (murmur2), so a card's state lives in partition ``murmur2(card) % N`` of
every co-partitioned topic and changelog. Payments re-keyed for another grouping (or
re-keyed by card because their producer keyed them otherwise) travel on the
repartition topic keyed ``"<group fields joined by +>\\x1f<group key>"``.
"""

from __future__ import annotations

import functools

GROUP_SEPARATOR = "\x1f"


# aiokafka's murmur2 is pure Python (~4 µs for a short key); forwarded payments' keys repeat.
@functools.lru_cache(maxsize=65_536)
def key_partition(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a record keyed by ``key``'s bytes."""
    # Imported here: aiokafka.partitioner loads all of aiokafka (~35 ms), which the engine,
    # a backtest or a notebook that never computes a partition should not pay for.
    from aiokafka.partitioner import murmur2  # noqa: PLC0415

    return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def card_partition(card_id: str, partitions: int) -> int:
    """The partition of a card's payments, state and re-keyed payments."""
    return key_partition(card_id, partitions)


def group_record_key(group_by: tuple[str, ...], key: str) -> str:
    return "+".join(group_by) + GROUP_SEPARATOR + key


def split_group_record_key(record_key: bytes | str) -> tuple[tuple[str, ...], str]:
    """``(group_by, key)`` of a repartition-topic record key; ValueError if it is not one."""
    text = record_key.decode() if isinstance(record_key, bytes) else record_key
    group_name, separator, key = text.partition(GROUP_SEPARATOR)
    if not separator or not group_name:
        raise ValueError("not a repartition-topic key")
    return tuple(group_name.split("+")), key

"""The tables' stores and table class: Faust's own, plus what the batch path needs.

A decided batch reads each key's stored bytes once and writes each changed key once: into
one RocksDB ``WriteBatch`` per partition, then to the changelog as one produce batch per
partition (``app.worker.checkpoint``). Through Faust's ``Table`` API a read asks the store
twice (``in``, then the value), and a write costs a RocksDB put, a ``FutureMessage`` and a
persisted-offset write per record.

Faust's stores and tables find the partition a key lives in from the *current event* (a
context variable of its stream iteration). The batch path decides a whole fetched batch of
one partition outside any stream, so it names the partition instead: ``deciding(partition)``
sets it for the stores' reads and writes and for the tables' changelog sends, and Faust's
own API on these tables (the inspection tables' ``table[key] = ...``) works inside it too.

Every private name of Faust's stores and tables that this project uses is used here, inside
their subclasses, and pinned by ``tests/unit/worker/test_framework_pins.py``. The stores are
registered as Faust store plugins (setup.cfg's ``faust.stores`` entry points) under their
own names, ``state-rocksdb`` and ``state-memory``: the app's store is ``state-`` and
``FRAUD_STORE``.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import faust
import msgspec
import rocksdict
from faust.stores import memory, rocksdb
from faust.types import TP

# The partition a batch is deciding; None outside one (Faust's current event decides).
_deciding: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "deciding_partition", default=None
)

# A batch reads state, awaits its alerts' acknowledgements, then writes state. The
# consumer decides the batches of one partition one after another, and those of different
# partitions side by side; Faust's own streams (a record that reaches an agent's stream)
# and the sweep (tables.sweep) run beside them. A table keeps each partition's keys in a
# store of its own, shared by the co-partitioned topics: a card's payments come from
# payments.raw and, re-keyed, from the repartition topic, both to its partition. So one
# lock per partition number (not per topic) keeps two writers of the same state from
# interleaving.
partition_locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)


@contextmanager
def deciding(partition: int) -> Iterator[None]:
    """Reads and writes of the tables within are of ``partition``'s keys."""
    token = _deciding.set(partition)
    try:
        yield
    finally:
        _deciding.reset(token)


# The tables' key and value serializer is Faust's "json" codec. A RocksDB store holds what
# it encodes. A key must be the very bytes it encodes (stores look keys up by bytes): for
# the str keys here the standard library's encoder gives them without Faust's codec
# registry (which builds an encoder per call). A value need only be JSON the codec reads
# back: msgspec writes and reads the plain JSON states ~4x faster (compact, UTF-8 rather
# than \u escapes). Each is encoded once for the store and the changelog.
def encode_key(key: str) -> bytes:
    # Printable ASCII (every key the generator and most producers make): msgspec spells it
    # exactly as json.dumps does (only " and \ escaped, as \" and \\), ten times faster.
    # Anything else keeps json.dumps's escapes (\u for non-ASCII and control characters).
    if key.isascii() and key.isprintable():
        return _encode_str(key)
    return json.dumps(key).encode()


encode_value: Callable[[Any], bytes] = msgspec.json.Encoder().encode
_encode_str: Callable[[str], bytes] = msgspec.json.Encoder().encode
decode_value: Callable[[bytes], Any] = msgspec.json.Decoder().decode


class StateStore(Protocol):
    """What the batch path asks of a table's store."""

    def read(self, partition: int, key: str) -> bytes | None:
        """The stored value's bytes (None: no value)."""

    def stage(self, partition: int, key: str, value: bytes | None) -> None:
        """Write ``value`` (None deletes) when ``write_staged`` runs."""

    def write_staged(self) -> None:
        """Write what was staged, one batch per partition."""

    def record_changelog_offset(self, tp: TP, offset: int) -> None:
        """The changelog holds this store's writes up to ``offset`` (a restart recovers
        only the changelog past it)."""

    def items_of(
        self, partition: int, after: bytes | None, limit: int
    ) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` (key, value) pairs of ``partition`` in key order, past ``after``."""


class Topic(Protocol):
    def get_topic_name(self) -> str: ...


class Table(Protocol):
    """What the batch path and the sweep use of a table (a ``StateTable``)."""

    @property
    def name(self) -> str: ...
    @property
    def changelog_topic(self) -> Topic: ...
    @property
    def data(self) -> Any: ...  # its store: a StateStore (``store_of``)


class RocksDBStateStore(rocksdb.Store):
    """Faust's RocksDB store with batched writes and reads by partition."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._staged: dict[int, Any] = {}

    def read(self, partition: int, key: str) -> bytes | None:
        value: bytes | None = self._db_for_partition(partition).get(encode_key(key))
        return value

    def stage(self, partition: int, key: str, value: bytes | None) -> None:
        raw_key = encode_key(key)
        if not self.use_rocksdict:  # python-rocksdb: a write each
            db = self._db_for_partition(partition)
            if value is None:
                db.delete(raw_key)
            else:
                db.put(raw_key, value)
            return
        batch = self._staged.get(partition)
        if batch is None:
            batch = self._staged[partition] = rocksdict.WriteBatch(raw_mode=True)
        # Faust's key index (key -> partition, a locked LRU: ~1.5 µs a write) is only a
        # hint for reads outside a batch, which try every partition without it: not kept up
        # by the batch's writes (a key never changes partition, so it cannot go wrong).
        if value is None:
            batch.delete(raw_key)
        else:
            batch.put(raw_key, value)

    def write_staged(self) -> None:
        for partition, batch in self._staged.items():
            self._db_for_partition(partition).write(batch)
        self._staged.clear()

    def record_changelog_offset(self, tp: TP, offset: int) -> None:
        self.set_persisted_offset(tp, offset)

    def items_of(
        self, partition: int, after: bytes | None, limit: int
    ) -> list[tuple[bytes, bytes]]:
        db = self._dbs.get(partition)  # not opened here: a partition this worker lost
        if db is None:
            return []
        items = db.items() if after is None else db.items(from_key=after)
        return [
            (key, value)
            for key, value in itertools.islice(items, limit + 1)
            if key not in (after, self.offset_key)
        ][:limit]

    # Faust's reads and writes through the Table API, by the deciding partition when set.
    def _get(self, key: bytes) -> bytes | None:
        partition = _deciding.get()
        if partition is None:
            return super()._get(key)
        value: bytes | None = self._db_for_partition(partition).get(key)
        if value is not None:
            self._key_index[key] = partition
        return value

    def _set(self, key: bytes, value: bytes | None) -> None:
        partition = _deciding.get()
        if partition is None:
            super()._set(key, value)
            return
        self._key_index[key] = partition
        self._db_for_partition(partition).put(key, value)


class MemoryStateStore(memory.Store):  # type: ignore[type-arg]
    """Faust's in-memory store (``FRAUD_STORE=memory://``): decoded values by key, and
    each key's partition (which Faust learns from the changelog, and this from writes)."""

    def read(self, partition: int, key: str) -> bytes | None:
        value = self.data.get(key)
        return None if value is None else encode_value(value)

    def stage(self, partition: int, key: str, value: bytes | None) -> None:
        if value is None:
            self.data.pop(key, None)
            self._key_partition.pop(key, None)
        else:
            self.data[key] = decode_value(value)
            self._key_partition[key] = partition

    def write_staged(self) -> None:
        pass  # written when staged

    def record_changelog_offset(self, tp: TP, offset: int) -> None:
        pass  # nothing survives a restart: it recovers the whole changelog

    def items_of(
        self, partition: int, after: bytes | None, limit: int
    ) -> list[tuple[bytes, bytes]]:
        keys = sorted(
            (encode_key(key), key)
            for key, p in self._key_partition.items()
            if p == partition and key in self.data
        )
        return [
            (raw, encode_value(self.data[key])) for raw, key in keys if after is None or raw > after
        ][:limit]


class StateTable(faust.Table):  # type: ignore[type-arg]
    """Faust's table, whose changelog partition is the deciding partition inside
    ``deciding`` (Faust's current event elsewhere)."""

    def partition_for_key(self, key: Any) -> int | None:
        partition = _deciding.get()
        return partition if partition is not None else super().partition_for_key(key)


def store_of(table: Table) -> StateStore:
    """The batch path's view of a table built with a ``state_store_url`` store."""
    store: StateStore = table.data
    return store

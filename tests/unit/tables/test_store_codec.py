"""The batch path writes table keys and values itself: keys must be the very bytes Faust's
json codec gives (stores look keys up by bytes), values JSON that codec reads back."""

from __future__ import annotations

from typing import Any

import pytest
from faust.serializers import codecs

from tables.store import decode_value, encode_key, encode_value

FAUST_JSON = codecs.get_codec("json")

KEYS = [
    "tok_4b1f9c",
    "device_id\x1fdev-1",
    "café",
    "emoji 🎉",
    'quote " and \\ slash',
    "",
    "del \x7f",
    "tab\t",
]
STATES: list[Any] = [
    {"t": 1795955230575, "r": {}},
    {
        "t": 1795955230575,
        "r": {
            "device-many-cards": {
                "v": 2,
                "p": [[1795955230575, "txn-1", "20.82", "IT", ["tok_é"]]],
                "u": {"txn-0": 1795955229000},
            }
        },
    },
]


@pytest.mark.parametrize("key", KEYS)
def test_keys_are_the_bytes_fausts_codec_gives(key: str) -> None:
    assert encode_key(key) == FAUST_JSON.dumps(key)


@pytest.mark.parametrize("state", STATES)
def test_values_read_back_the_same_through_fausts_codec_and_ours(state: Any) -> None:
    assert FAUST_JSON.loads(encode_value(state)) == state
    assert decode_value(FAUST_JSON.dumps(state)) == state

"""The stored state's typed decoding (``KeyState.from_bytes``, what the batch path reads a
key's state with) reads what today's code writes, and every older encoding, exactly as
``from_json`` on the decoded JSON does."""

from __future__ import annotations

import json
from decimal import Decimal

from app.detection import state
from app.detection.state import (
    FirstSeenState,
    HistoryState,
    KeyState,
    RuleState,
    SequenceState,
)

# A card state as the code before the typed decoding wrote it (one rule state of each
# stored form: plain, first seen, history with buckets, sequence, an absence role).
TODAY = (
    b'{"t":1795002283163,"r":{'
    b'"new-device-high-value":{"v":1,"p":[[1795002279440,"txn-1","2668.78","FR",'
    b'"dev_50bcdcde418b","d19ce3a26c96bcbc"]],"u":{},"k":"first_seen",'
    b'"s":{"dev_50bcdcde418b":1795001775113}},'
    b'"ten-times-usual-spend":{"v":1,"p":[[1795002279440,"txn-1","2668.78","FR","",'
    b'"d19ce3a26c96bcbc"]],"u":{"txn-1":[1795002279440,"d19ce3a26c96bcbc"]},'
    b'"k":"history","bw":10080000,"b":[[178075,5,"473.74","294.35"]]},'
    b'"high-value-burst":{"v":2,"p":[],"u":{"txn-0":[1795002279000,"aa"]}},'
    b'"testing-then-cash-out":{"v":1,"p":[[1795002279440,"txn-1","2668.78","FR",'
    b'"[2,\\"m1\\"]","d19ce3a26c96bcbc"]],"u":{},"k":"sequence"},'
    b'"large-payment-unconfirmed":{"v":1,"p":[[1795002279440,"txn-1","2668.78","FR","a",'
    b'"d19ce3a26c96bcbc"]],"u":{},"k":"absence"}},'
    b'"w":1795002290000}'
)


def _both(raw: bytes) -> tuple[KeyState, KeyState]:
    return KeyState.from_bytes(raw), KeyState.from_json(json.loads(raw))


def test_todays_json_loads_as_from_json_reads_it() -> None:
    state._decode_key_body(TODAY)  # the typed decoding reads it (no fallback to from_json)
    typed, old = _both(TODAY)
    assert typed == old
    assert typed.newest_ts == 1795002283163 and typed.written_ms == 1795002290000
    assert [type(s) for s in typed.rules.values()] == [type(s) for s in old.rules.values()]
    seen = typed.rules["new-device-high-value"]
    assert isinstance(seen, FirstSeenState)
    assert seen.seen == {"dev_50bcdcde418b": 1795001775113}
    history = typed.rules["ten-times-usual-spend"]
    assert isinstance(history, HistoryState)
    assert history.width_ms == 10080000
    assert history.buckets == [[178075, 5, Decimal("473.74"), Decimal("294.35")]]
    assert history.pool == [(1795002279440, "txn-1", "2668.78", "FR", "", "d19ce3a26c96bcbc")]
    assert history.used == {"txn-1": (1795002279440, "d19ce3a26c96bcbc")}
    assert isinstance(typed.rules["testing-then-cash-out"], SequenceState)
    assert type(typed.rules["high-value-burst"]) is RuleState
    # What it writes back is what it read.
    assert json.dumps(typed.to_json(), separators=(",", ":")).encode() == TODAY


def test_a_state_written_again_loads_the_same() -> None:
    state = KeyState.from_bytes(TODAY)
    again = KeyState.from_bytes(json.dumps(state.to_json()).encode())
    assert again == state and again.to_json() == state.to_json()


def test_older_encodings_load_as_from_json_reads_them() -> None:
    # Before fingerprints (entries of 5 fields, used events by time alone), before buckets
    # (no "bw"), before the write time (no "w"), and no state at all.
    older = [
        b'{"t":1000,"r":{"seed":{"v":1,"p":[[900,"t1","10.00","US",""]],"u":{"t0":800}}}}',
        b'{"t":1000,"r":{"h":{"v":1,"p":[[900,"t1","10.00","US","","fp"]],"u":{},"k":"history"}}}',
        b'{"t":null,"r":{}}',
    ]
    for raw in older:
        typed, old = _both(raw)
        assert typed == old
        assert typed.to_json() == old.to_json()
    typed = KeyState.from_bytes(older[0])
    assert typed.rules["seed"].pool == [(900, "t1", "10.00", "US", "", "")]
    assert typed.rules["seed"].used == {"t0": (800, "")}
    assert KeyState.from_bytes(None) == KeyState()

"""app/history/payments.py: the archive reads a roll's payments in bulk, and archives exactly
the rows the worker's validator reads, one record at a time (``payment_row``), would give:
the same records refused, the same values, no card number in clear."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.json as pj
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.detection.pan import contains_pan
from app.detection.validation import Limits
from app.history import payments
from app.history.payments import HOUR_MS, payment_table
from app.history.schema import PAYMENTS, payment_row, payment_values

NOW_MS = 1795940000000  # 2026-11-28T06:53:20Z, the records' Kafka timestamp
NOW_ISO = "2026-11-28T06:53:20.000Z"
LIMITS = Limits()


def body(**fields: Any) -> dict[str, Any]:
    """A valid payment's JSON object, with ``fields`` replaced (None: left out)."""
    found = {
        "txn_id": "txn-1",
        "card_id": "tok_9f8e7d6c5b4a",
        "account_id": "acct_1",
        "amount": "1250.00",
        "currency": "GBP",
        "merchant_id": "m_7c3e9a10",
        "mcc": "5732",
        "country": "GB",
        "device_id": "dev_b3d2e1f0a9c8",
        "ip": "203.0.113.42",
        "ts": "2026-11-28T06:50:07.250Z",
    }
    found.update(fields)
    return {name: value for name, value in found.items() if value is not None}


def raw(**fields: Any) -> bytes:
    return json.dumps(body(**fields), separators=(",", ":")).encode()


@dataclass(frozen=True)
class Roll:
    """A partition's records, column by column, as the buffer holds them."""

    keys: list[bytes | None]
    values: list[bytes | None]
    timestamps: list[int]

    @classmethod
    def of(
        cls,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None] | None = None,
        timestamps: Sequence[int] | None = None,
    ) -> Roll:
        return cls(
            list(keys) if keys is not None else [None] * len(values),
            list(values),
            list(timestamps) if timestamps is not None else [NOW_MS] * len(values),
        )

    @property
    def offsets(self) -> list[int]:
        return [100 + index for index in range(len(self.values))]


def bulk(roll: Roll, limits: Limits = LIMITS) -> tuple[pa.Table, list[int]]:
    table, hours = payment_table(roll.offsets, roll.timestamps, roll.keys, roll.values, 7, limits)
    return table, hours.to_pylist()


def one_by_one(roll: Roll, limits: Limits = LIMITS) -> tuple[pa.Table, list[int]]:
    """What the archive held before: ``payment_row`` a record, each row placed by hour."""
    rows, hours = [], []
    records = zip(roll.offsets, roll.timestamps, roll.keys, roll.values, strict=True)
    for offset, timestamp, key, value in records:
        row = payment_row(value, 7, offset, timestamp, limits, key)
        if row is not None:
            rows.append(row.values)
            moment = datetime.strptime(f"{row.date} {row.hour}", "%Y-%m-%d %H")
            hours.append(int(moment.replace(tzinfo=UTC).timestamp() * 1000) // HOUR_MS)
    return pa.Table.from_pylist(rows, schema=PAYMENTS), hours


def assert_same_rows(roll: Roll, limits: Limits = LIMITS) -> pa.Table:
    table, hours = bulk(roll, limits)
    expected, expected_hours = one_by_one(roll, limits)
    assert table.schema.equals(PAYMENTS)
    assert table.to_pylist() == expected.to_pylist()
    assert hours == expected_hours
    return table


class SlowPath:
    """Counts the records that went the validator's way."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = payment_values

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(payments, "payment_values", counted)


# Records whose reading is not obvious, each with what the validator makes of it.
TRICKY: list[bytes | None] = [
    raw(),
    raw(amount=1250),
    raw(amount=12.5),
    raw(amount=1.25e3),
    raw(amount=0),
    raw(amount=-0.0),
    raw(amount=-5),
    raw(amount=1e13),
    b'{"amount":1E+2,' + raw()[1:].replace(b'"amount":"1250.00",', b""),
    # 27 digits: Arrow reads it, and must not round it.
    b'{"amount":159836339253640858371368846.808237,'
    + raw()[1:].replace(b'"amount":"1250.00",', b""),
    raw(amount="1e3"),
    raw(amount=" 12.50 "),
    raw(amount="+5"),
    raw(amount="-0"),
    raw(amount="1_000"),
    raw(amount=".5"),
    raw(amount="5."),
    raw(amount="NaN"),
    raw(amount="Infinity"),
    raw(amount="0.1234567"),
    raw(amount="1.0000000"),
    raw(amount="1.1234567890123"),
    raw(amount="1000000000000"),
    raw(amount="1000000000000.000001"),
    raw(amount="0" * 130 + "1"),
    raw(amount="abc"),
    raw(amount=True),
    raw(amount=[1]),
    raw(amount=None),
    raw(mcc=742),
    raw(mcc=0),
    raw(mcc=-5),
    raw(mcc=12345),
    raw(mcc=5411.0),
    raw(mcc="742"),
    raw(mcc="07420"),
    raw(mcc="54a1"),
    raw(ts="2026-11-28T06:50:07Z"),
    raw(ts="2026-11-28T06:50:07.3Z"),
    raw(ts="2026-11-28T06:50:07.123456Z"),
    raw(ts="2026-11-28T06:50:07.1234567Z"),
    raw(ts="2026-11-28T07:50:07.250+01:00"),
    raw(ts="2026-11-28T06:50:07.250-00:00"),
    raw(ts="2026-11-29T06:49:07.250+23:59"),
    raw(ts="2026-11-28T06:50:07.250+24:00"),
    raw(ts="2026-11-28T06:50:07.250+0100"),
    raw(ts="2026-11-28T06:50:07,250Z"),
    raw(ts="2026-11-28 06:50:07.250Z"),
    raw(ts="2026-11-28t06:50:07.250Z"),
    raw(ts="2026-11-28T06:50Z"),
    raw(ts="20261128T065007Z"),
    raw(ts="2026-11-28T06:50:07.250"),
    raw(ts="2026-02-30T06:50:07Z"),
    raw(ts="2026-11-28T06:50:60Z"),
    raw(ts="2026-11-28T24:00:00Z"),
    raw(ts="2026-11-28T06:53:51Z"),  # 31 s ahead of the record's Kafka timestamp
    raw(ts="2026-11-28T06:53:50Z"),  # 30 s ahead: allowed
    raw(ts="2026-10-28T06:53:19Z"),  # older than 30 days
    raw(ts="1969-12-31T23:59:59Z"),
    raw(ts=1795939807250),
    raw(txn_id=""),
    raw(txn_id="   "),
    raw(txn_id=" t "),
    raw(txn_id="t" * 128),
    raw(txn_id="t" * 129),
    raw(txn_id=17),
    raw(txn_id=None),
    raw(device_id="dev\x7f"),
    raw(merchant_id="café"),
    b'{"merchant_id":"caf\\u00e9",' + raw()[1:].replace(b'"merchant_id":"m_7c3e9a10",', b""),
    b'{"txn_id":"\\u0074xn",' + raw()[1:].replace(b'"txn_id":"txn-1",', b""),
    raw(currency="gbp"),
    raw(currency="XYZ"),
    raw(country="UK"),
    raw(country=None),
    raw(card_id="4111111111111111"),
    raw(txn_id="txn-4111 1111 1111 1111"),
    raw(ip="4111.1111.1111.1111"),
    raw(merchant_id="m-4111-1111-1111-1111"),
    raw(note="card 4111111111111111"),  # not a payment's field: dropped, and valid
    raw(txn_id="txn-1234567890123"),  # 13 digits, not a card number
    raw(extra={"nested": [1, "two", None, {"deep": True}]}),
    raw(extra=1, other=[]),
    b'{"txn_id":"a",' + raw()[1:],  # txn_id twice: the last one counts
    raw() + raw(),
    raw() + b" trailing",
    b" " + raw(),
    raw() + b"\n",
    json.dumps(body(), indent=2).encode(),
    json.dumps(body(), indent=2).replace("\n", "\r\n").encode(),
    b"[" + raw() + b"]",
    b"{}",
    b"[]",
    b"null",
    b"not json",
    b"",
    None,
    b"\xef\xbb\xbf" + raw(),
    json.dumps(body()).encode("utf-16"),
    raw(padding="x" * 17000),
    b'{"txn_id":"a\tb",' + raw()[1:].replace(b'"txn_id":"txn-1",', b""),
    b'{"txn_id":"t1","card_id":"tok_1"',
    b'"card_id":"tok_1"}',
]


def test_every_tricky_record_is_read_as_the_validator_reads_it() -> None:
    for record in TRICKY:
        assert_same_rows(Roll.of([record]))


def test_tricky_records_in_one_roll_leave_the_others_as_they_are() -> None:
    # Valid payments between each: a record that fails a block's parse costs its neighbours
    # the fast path at most, never their rows.
    records: list[bytes | None] = []
    for index, record in enumerate(TRICKY):
        records += [raw(txn_id=f"t{index}-{n}") for n in range(20)] + [record]
    table = assert_same_rows(Roll.of(records))
    assert table.num_rows > 20 * len(TRICKY)


def test_the_generator_s_payments_take_the_fast_path_and_keep_their_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slow = SlowPath(monkeypatch)
    generated = [raw(txn_id=f"t{n}", amount=f"{n % 9000}.{n % 100:02d}") for n in range(3000)]
    keys: list[bytes | None] = [b"tok_9f8e7d6c5b4a"] * len(generated)
    assert_same_rows(Roll.of(generated, keys))
    assert slow.calls == 0


def test_amounts_and_mccs_sent_as_json_numbers_take_the_fast_path_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    records = [raw(txn_id=f"t{n}", amount=n * 1.5, mcc=700 + n) for n in range(2000)]
    slow = SlowPath(monkeypatch)
    table, _ = bulk(Roll.of(records))
    assert slow.calls == 0
    assert table.column("mcc").to_pylist()[:2] == ["0700", "0701"]
    assert table.column("amount").to_pylist()[:2] == [Decimal(0), Decimal("1.5")]


def test_long_digit_runs_in_ids_and_keys_are_checked_field_by_field_not_the_slow_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A txn id with an epoch timestamp in milliseconds, a token of 16 digits that is no card
    # number (75 is no network's range), keyed by that token: the bytes' pre-check cannot
    # clear them, the fields' check does.
    records = [
        raw(txn_id=f"txn-1795940000{n:03d}-{n}", card_id="tok_7567273142341000")
        for n in range(1000)
    ]
    keys: list[bytes | None] = [b"tok_7567273142341000"] * len(records)
    slow = SlowPath(monkeypatch)
    table = assert_same_rows(Roll.of(records, keys))
    assert table.num_rows == len(records)
    assert slow.calls == 0


def test_a_card_number_among_long_digit_runs_is_refused_as_the_validator_refuses_it() -> None:
    records = [raw(txn_id=f"txn-1795940000{n:03d}") for n in range(50)]
    records += [
        raw(card_id="tok_4242424242424242"),  # a Visa number, delimited
        raw(merchant_id="m-4242 4242 4242 4242"),
        raw(ip="4242.4242.4242.4242"),
        raw(amount="4242424242424242"),  # above the largest amount too
        raw(amount=4242424242424.242),  # a number: its text is the validator's to read
        raw(txn_id="t-1795940000000", amount=12.5),
    ]
    keys: list[bytes | None] = [b"tok_9f8e7d6c5b4a"] * len(records)
    keys[3] = b"4242424242424242"  # re-keyed by a card number: refused
    keys[4] = b"1795940000004"  # re-keyed by digits that are no card number
    table = assert_same_rows(Roll.of(records, keys))
    assert table.num_rows == 50  # the 50 less the one keyed by a card number, and the last
    for row in table.to_pylist():
        assert not any(isinstance(v, str) and contains_pan(v) for v in row.values())


def test_amounts_among_json_numbers_are_read_from_their_own_text() -> None:
    # Arrow's decimal reads a JSON string as a decimal too, past the checks made for strings
    # (the validator refuses an amount string of 129 characters), and wraps some numbers too
    # large for the column around instead of refusing them.
    numbers = [raw(txn_id=f"t{n}", amount=n) for n in range(20)]
    for amount in ["0" * 128 + "5", "1e3", "+5"]:
        assert_same_rows(Roll.of([*numbers, raw(amount=amount)]))
    wraps = b"4111111111111111217959400001230"
    record = b'{"amount":' + wraps + b"," + raw()[1:].replace(b'"amount":"1250.00",', b"")
    assert assert_same_rows(Roll.of([*numbers, record])).num_rows == 20
    twice = assert_same_rows(Roll.of([*numbers, raw(note={"amount": 7})]))
    assert twice.num_rows == 21


def test_a_malformed_record_sends_only_a_few_neighbours_the_slow_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    records: list[bytes | None] = [raw(txn_id=f"t{n}") for n in range(5000)]
    records[2500] = raw(txn_id=17)  # the block's parse fails on it
    slow = SlowPath(monkeypatch)
    table, _ = bulk(Roll.of(records))
    assert table.num_rows == 4999
    assert slow.calls <= 16


def test_records_that_form_objects_only_together_are_each_read_alone() -> None:
    # Joined, the first two make one payment and the third two: as many objects as records,
    # none of them a record. Read in bulk as they come, the unfinished first record would be
    # archived as that payment; the validator refuses it, and the first two are refused.
    records: list[bytes | None] = [
        raw(txn_id="a")[:-1] + b',"note":',
        b"{}}",
        raw(txn_id="b") + raw(txn_id="c"),
        raw(txn_id="d"),
    ]
    table = assert_same_rows(Roll.of(records))
    assert table.column("txn_id").to_pylist() == ["d"]


def test_an_event_key_spelt_as_a_value_or_a_prefix_is_still_read_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The bulk read knows a payment's fields only: whatever says "type", "lat" or "lon" goes
    # the validator's way, as a key or not, and a field that merely starts so does not.
    records: list[bytes | None] = [
        raw(txn_id="t1", note="type"),
        raw(txn_id="t2", lat=51.5),
        raw(txn_id="t3", lon="0.1"),
        raw(txn_id="t4", types="x", latitude=1, long="y"),
    ]
    slow = SlowPath(monkeypatch)
    assert_same_rows(Roll.of(records))
    assert slow.calls == 3


def test_records_that_keep_failing_cost_the_slow_path_not_a_bisection_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every other record an amount of another JSON type: each block fails under both.
    records = [raw(txn_id=f"t{n}", amount=n if n % 2 else str(n)) for n in range(4000)]
    parses = 0
    read_json = pj.read_json

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal parses
        parses += 1
        return read_json(*args, **kwargs)

    monkeypatch.setattr(pj, "read_json", counted)
    assert_same_rows(Roll.of(records))
    assert parses < 3 * 2 * payments._RETRY_FACTOR * len(records) / payments._FLOOR


def test_a_card_number_never_reaches_an_archived_row_in_clear() -> None:
    cards = ["4111111111111111", "4111 1111 1111 1111", "tok_4111111111111111"]
    pans = [raw(txn_id=f"t{n}", card_id=card) for n, card in enumerate(cards)]
    pans += [raw(txn_id="t9", ip="\\u0034111111111111111")]
    keyed = [raw(txn_id=f"k{n}") for n in range(3)]
    keys: list[bytes | None] = [None] * len(pans) + [
        b"4111111111111111",
        b"4111 1111 1111 1111",
        b"\\u0034111111111111111",
    ]
    table = assert_same_rows(Roll.of(pans + keyed, keys))
    assert table.num_rows == 0, "each refused, as the worker refuses it"
    mixed = [raw(txn_id=f"ok{n}") for n in range(50)] + pans
    table = assert_same_rows(Roll.of(mixed))
    for row in table.to_pylist():
        assert not any(isinstance(v, str) and contains_pan(v) for v in row.values())


def test_limits_other_than_the_defaults_are_the_validator_s_too() -> None:
    limits = Limits(
        max_bytes=300,
        max_future_skew_ms=0,
        max_event_age_ms=60_000,
        max_amount=Decimal("999.999"),
        max_amount_decimals=2,
    )
    records: list[bytes | None] = [
        raw(amount=amount) for amount in ["999.99", "999.999", "1000", "12.345", "12.340", 5]
    ]
    records += [raw(ts=ts) for ts in [NOW_ISO, "2026-11-28T06:53:20.001Z", "2026-11-28T06:52:19Z"]]
    records += [raw(padding="x" * n) for n in (0, 40, 80)]
    assert_same_rows(Roll.of(records), limits)


def test_an_empty_roll_and_a_roll_of_nothing_valid_have_no_rows() -> None:
    assert bulk(Roll.of([]))[0].num_rows == 0
    assert assert_same_rows(Roll.of([None, b"", b"{}"])).num_rows == 0


# Values of each field, valid and not, for rolls drawn at random.
FIELD_VALUES: dict[str, list[Any]] = {
    "txn_id": [
        *["txn-1", "t", " t", "", "  ", 5, None, "t" * 129, "txn-4111111111111111"],
        *["txn-1795940000123", "txn-1795-9400-0012-3"],
    ],
    "card_id": [
        *["tok_1", "tok_9f8e7d6c5b4a", "4111111111111111", "", None],
        *["tok_7567273142341000", "tok_4242424242424242"],
    ],
    "amount": ["1250.00", "0", "12.345678", "1e3", " 5", 5, 1.5, -1, "-1", "x", None, 1e20],
    "currency": ["GBP", "USD", "usd", "XYZ", None, 1],
    "mcc": ["5411", "541", 742, 99999, "54111", None],
    "country": ["GB", "US", "gb", None],
    "ts": [
        "2026-11-28T06:50:07.250Z",
        "2026-11-28T06:50:07Z",
        "2026-11-28T06:50:07.1+01:00",
        "2026-11-28T06:50:07.250",
        "2026-02-30T06:50:07Z",
        "2026-11-28T06:55:07Z",
        "2025-11-28T06:50:07Z",
        None,
    ],
}


@st.composite
def records(draw: st.DrawFn) -> tuple[bytes | None, bytes | None, int]:
    fields = {name: draw(st.sampled_from(values)) for name, values in FIELD_VALUES.items()}
    value = body(**fields)
    if draw(st.booleans()):
        value["extra"] = draw(st.sampled_from([1, "x", [1, {"a": None}], "4111111111111111"]))
    names = list(value)
    order = draw(st.permutations(names))
    spaced = draw(st.booleans())
    text = json.dumps(
        {name: value[name] for name in order},
        separators=(", ", ": ") if spaced else (",", ":"),
    ).encode()
    text = draw(st.sampled_from([text, text, text, text + text, text[:-1], b" " + text]))
    card = str(value.get("card_id", "")).encode()
    key = draw(st.sampled_from([None, b"tok_1", card, b"1795940000123", b"4242424242424242"]))
    timestamp = NOW_MS + draw(st.sampled_from([0, 1, -1, 90_000, -90_000]))
    return key, text, timestamp


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records(), min_size=1, max_size=60))
def test_random_rolls_give_the_validator_s_rows(
    drawn: list[tuple[bytes | None, bytes | None, int]],
) -> None:
    keys = [key for key, _, _ in drawn]
    values = [value for _, value, _ in drawn]
    timestamps = [timestamp for _, _, timestamp in drawn]
    assert_same_rows(Roll.of(values, keys, timestamps))


# Bytes that change how a record parses, or what it can spell.
MUTATIONS = [b'"', b"\\", b"{", b"}", b",", b":", b"]", b"0", b"5", b" ", b"\n", b"\r", b"\x00"]
MUTATIONS += [b"\xc3\xa9", b"null", b"e", b"-", b"Z", b"\x7f", b"4111111111111111"]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid record with a few bytes inserted, deleted or replaced."""
    record = bytearray(raw(txn_id=f"t{draw(st.integers(0, 99))}"))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(record)))
        cut = draw(st.integers(0, 3))
        record[at : at + cut] = draw(st.sampled_from(MUTATIONS))
    return bytes(record)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated(), min_size=1, max_size=40))
def test_damaged_records_are_refused_or_read_as_the_validator_reads_them(
    values: list[bytes],
) -> None:
    assert_same_rows(Roll.of(list(values)))


def test_events_of_other_types_and_positions_are_archived_with_them() -> None:
    """A login and a payment with a position take the validator's way and keep their type
    and position; a plain payment beside them has neither (null), as before event types."""
    login = {
        "type": "login",
        "txn_id": "txn-login",
        "account_id": "acct_1",
        "device_id": "dev_1",
        "ip": "203.0.113.42",
        "ts": "2026-11-28T06:50:08.000Z",
    }
    records = [
        raw(txn_id="txn-plain"),
        json.dumps(login).encode(),
        raw(txn_id="txn-located", lat="51.5072", lon=-0.1276),
        raw(txn_id="txn-typed", type="payment"),
    ]
    table = assert_same_rows(Roll.of(records))
    rows = {row["txn_id"]: row for row in table.to_pylist()}
    assert (rows["txn-login"]["type"], rows["txn-login"]["card_id"]) == ("login", "")
    assert (rows["txn-located"]["lat"], rows["txn-located"]["lon"]) == (51.5072, -0.1276)
    for plain in ("txn-plain", "txn-typed"):
        assert (rows[plain]["type"], rows[plain]["lat"], rows[plain]["lon"]) == (None, None, None)

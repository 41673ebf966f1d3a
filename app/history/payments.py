"""Payments archived in bulk from their raw bytes, with the rows ``payment_row`` gives.

The archive once decoded every payment again in Python, one row at a time: ~17 µs a record,
half a worker's capacity. Here a partition's records are read all at once when they roll:
Arrow's C++ JSON reader parses them, newline-joined, into columns, and vectorised checks keep
the records that are *certainly* valid payments, with the values the worker's validator reads
(``app.detection.validation.parse_keyed_payment``). Every other record takes the slow path,
``payment_values``, which is that validator: the archive then holds exactly the rows it held
before, and the tests hold the two paths to that (``tests/unit/history/test_payments.py``).

The fast path takes a record only when all of this holds:

* no card number is in a field it keeps, nor in its key, as the validator sees it. A record
  must be plain ASCII without a backslash or NUL: no other reading of it (an escape, another
  script's digits, UTF-16) can spell a number. ``may_hold_pan`` clears most records and keys
  at once, one C-level scan of a whole chunk's bytes, as the validator's own pre-check does
  for each; the fields of a record it does not clear (a run of 13 digits somewhere) are read
  by ``contains_pan``, each that holds 13 digits, as the validator reads them; a key it does
  not clear must be the card id (then the validator does not read it). A record holding a
  card number goes the validator's way, which refuses it (the worker dead-letters it, masked):
  no card number reaches a payment row in clear by either path;
* it is one JSON object and nothing else (msgspec skims it), no longer than the validator
  allows, so the joined text parses into exactly one row per record (Arrow crashes on a
  top-level ``null``);
* Arrow parses it with the payment's fields as strings (``amount`` also as a JSON number,
  ``mcc`` also as an integer): a field of another type, a duplicated field or invalid JSON fails
  the parse of its block, which is split in halves until the records that fail are isolated. A
  JSON number's amount is read from its own text, not from Arrow's decimal (which reads strings
  too, and wraps some numbers too large for it around);
* the checks below prove what the validator would accept, and compute what it would store:
  identifiers non-blank and at most 128 characters; the currency and country known; ``mcc``
  four digits (an integer padded as the validator pads it); the amount a plain decimal (or a JSON
  number) from 0 to ``max_amount`` with at most ``max_amount_decimals`` places; ``ts`` of the
  form ``2026-11-28T14:03:07[.250](Z|+01:00)``, a real date and time, at most the allowed skew
  ahead of and the maximum age behind the record's Kafka timestamp. Its milliseconds are
  computed as the validator computes them (through a float: ``int(ts.timestamp() * 1000)``).

Whatever fails a check is not refused here: it takes the slow path, which decides.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from itertools import repeat
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from app.detection.models import PAYMENT_FIELDS
from app.detection.pan import contains_pan, may_hold_pan
from app.detection.validation import COUNTRIES, CURRENCIES, Limits
from app.history.schema import AMOUNT, EVENT_COLUMNS, PAYMENTS, TIME, payment_values

HOUR_MS = 3_600_000
# Records parsed at once: each C-level call on a chunk holds the GIL a few milliseconds at
# most, so the worker's event loop keeps its turns while a roll is read in its thread.
CHUNK = 8192
# A block of at most this many records that Arrow cannot parse goes record by record.
_FLOOR = 16
# Records re-parsed while isolating the ones Arrow refuses, at most this many times a roll's
# own (past it, what fails goes record by record): a roll whose records keep failing costs
# what the slow path costs, not that plus a bisection.
_RETRY_FACTOR = 2

_STRING_FIELDS = ("txn_id", "card_id", "account_id", "merchant_id", "device_id", "ip")
_MAX_LENGTH = 128  # app.detection.validation's longest field
_AMOUNT_TEXT = r"^[0-9]{1,16}(\.[0-9]{1,12})?$"  # castable to decimal128(38, 12) as is
_AMOUNT_NUMBER = r'"amount"\s*:\s*(?P<text>[^,}\s]*)'
_DIGIT_RUN = r"[0-9](?:[ .-]*[0-9]){12}"
# 2026-11-28T14:03:07[.250](Z|+01:00): datetime.fromisoformat and Arrow read it alike.
_TS = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
_EPOCH = "1970-01-01T00:00:00Z"
_MICROS = pa.timestamp("us", tz="UTC")
_FLOAT_EXACT = 2**53
_CURRENCIES = pa.array(sorted(CURRENCIES), pa.string())
_COUNTRIES = pa.array(sorted(COUNTRIES), pa.string())
_ONE_VALUE = msgspec.json.Decoder(msgspec.Raw)
_READ = pj.ReadOptions(use_threads=False)  # the worker's cores are for detection
_FLIP = re.compile(r"Column\(/(amount|mcc)\) changed from (?:string|number) to (?:string|number)")


@dataclass(frozen=True)
class _Variant:
    """The JSON types Arrow reads ``amount`` and ``mcc`` as: strings, or numbers."""

    amount_number: bool = False
    mcc_number: bool = False

    @property
    def options(self) -> pj.ParseOptions:
        types = {name: pa.string() for name in PAYMENT_FIELDS}
        if self.amount_number:
            types["amount"] = AMOUNT
        if self.mcc_number:
            types["mcc"] = pa.int64()
        schema = pa.schema([pa.field(name, types[name]) for name in PAYMENT_FIELDS])
        return pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")

    def flipped(self, error: str) -> _Variant | None:
        """The other variant of the column whose type the parse ``error`` says changed."""
        found = _FLIP.search(error)
        if found is None:
            return None
        if found[1] == "amount":
            return _Variant(not self.amount_number, self.mcc_number)
        return _Variant(self.amount_number, not self.mcc_number)


_VARIANTS = {
    variant: variant.options
    for variant in (_Variant(a, m) for a in (False, True) for m in (False, True))
}


@dataclass
class _Parsed:
    """What the parse of one roll gave: blocks of columns, and the records left to the
    validator (indexes into the roll)."""

    blocks: list[tuple[list[int], pa.Table]] = field(default_factory=list)  # normalised
    slow: list[int] = field(default_factory=list)
    # Records whose bytes hold a run of 13 digits: their fields are checked one by one, as
    # the validator checks them. Records whose key could hold a card number: it must be
    # their card id (then the validator does not look at it).
    field_checks: set[int] = field(default_factory=set)
    key_checks: set[int] = field(default_factory=set)
    variant: _Variant = _Variant()
    retries_left: int = 0


def payment_table(
    offsets: Sequence[int],
    timestamps: Sequence[int],
    keys: Sequence[bytes | None],
    values: Sequence[bytes | None],
    partition: int,
    limits: Limits,
) -> tuple[pa.Table, pa.Array]:
    """The rows of a partition's ``payments.raw`` records in offset order (``PAYMENTS``) and
    each row's event hour (its ``ts`` in whole hours since the epoch); a record that is not
    a valid payment has no row, as with ``payment_row``."""
    parsed = _Parsed(retries_left=_RETRY_FACTOR * len(values))
    for start in range(0, len(values), CHUNK):
        end = start + CHUNK
        _parse_chunk(parsed, start, keys[start:end], values[start:end], limits.max_bytes)
    fast, fast_hours, uncertain = _certain(parsed, offsets, timestamps, keys, partition, limits)
    slow_rows: list[dict[str, Any]] = []
    slow_hours: list[int] = []
    for index in sorted(parsed.slow + uncertain):
        found = payment_values(
            values[index], partition, offsets[index], timestamps[index], limits, keys[index]
        )
        if found is not None:
            ts_ms, row = found
            slow_rows.append(row)
            slow_hours.append(ts_ms // HOUR_MS)
    if not slow_rows:
        return fast, fast_hours  # the parsed blocks come in offset order
    # A chunk at a time: from_pylist holds the GIL all along.
    slow = [
        pa.Table.from_pylist(slow_rows[start : start + CHUNK], schema=PAYMENTS)
        for start in range(0, len(slow_rows), CHUNK)
    ]
    table = pa.concat_tables([fast, *slow])
    hours = pa.concat_arrays([fast_hours, pa.array(slow_hours, pa.int64())])
    order = pc.sort_indices(table.column("kafka_offset"))
    return table.take(order), hours.take(order)


def _parse_chunk(
    parsed: _Parsed,
    start: int,
    keys: Sequence[bytes | None],
    values: Sequence[bytes | None],
    max_bytes: int,
) -> None:
    """Parse what can take the fast path among one chunk's records (starting at ``start`` in
    the roll) into ``parsed``; the rest goes to ``parsed.slow``."""
    candidates, blob = _candidates(parsed, start, keys, values, max_bytes)
    texts = [values[i] or b"" for i in candidates]
    if len(candidates) < len(values) or not _one_value_each(texts, blob):
        kept = [i for i, text in zip(candidates, texts, strict=True) if _one_value(text)]
        if len(kept) < len(candidates):
            candidates, texts, blob = kept, [values[i] or b"" for i in kept], None
    if len(candidates) < len(values):
        taken = set(candidates)
        parsed.slow.extend(start + i for i in range(len(values)) if i not in taken)
    if candidates:
        # A record's own raw newlines (between its tokens: msgspec refuses one in a string)
        # cannot make Arrow read other rows than the records: a block of the joined text cut
        # inside a record leaves that record incomplete, which fails the block's parse.
        _parse_block(parsed, [start + i for i in candidates], texts, blob)


def _candidates(
    parsed: _Parsed,
    start: int,
    keys: Sequence[bytes | None],
    values: Sequence[bytes | None],
    max_bytes: int,
) -> tuple[list[int], bytes | None]:
    """The records that may take the fast path, and, when they are all of them, their
    values newline-joined: a value of 1 to ``max_bytes`` bytes of plain ASCII without a
    backslash or NUL (no other reading of it can spell a card number). Those that hold a run
    of 13 digits, and those whose key could hold a card number, are noted in ``parsed`` for
    the checks after the parse. One scan of the chunk's joined values (and one of its keys)
    clears them all, the common case; else each record is looked at."""
    present = [v for v in values if v is not None]
    blob = b"\n".join(present) if len(present) == len(values) else None
    if blob is not None and not may_hold_pan(blob) and _untyped(blob):
        found = list(range(len(values)))
    else:
        found = [i for i, value in enumerate(values) if _plain(value)]
        parsed.field_checks.update(start + i for i in found if not _clear(values[i]))
        if len(found) < len(values):
            blob = None  # it joins records that do not take the fast path
    given = [k for k in keys if k is not None]
    if given and may_hold_pan(b"\n".join(given)):
        parsed.key_checks.update(start + i for i in found if not _clear(keys[i]))
    sizes = list(map(len, present)) if len(found) == len(values) else None
    if sizes and min(sizes) > 0 and max(sizes) <= max_bytes:
        return found, blob
    # Empty and oversize records are the validator's to refuse.
    return [i for i in found if 0 < len(values[i] or b"") <= max_bytes], None


# An event that may say its type or where it happened (``"type"``, ``"lat"`` or ``"lon"``
# anywhere in it) is the validator's to read: the bulk read knows a payment's fields only.
# One scan of a chunk for the three (three ``in`` tests cost half as much again).
_EVENT_KEYS = re.compile(rb'"t(?:ype)"|"l(?:at|on)"')


def _untyped(raw: bytes) -> bool:
    return _EVENT_KEYS.search(raw) is None


def _plain(raw: bytes | None) -> bool:
    return (
        raw is not None
        and raw.isascii()
        and b"\\" not in raw
        and b"\x00" not in raw
        and _untyped(raw)
    )


def _clear(raw: bytes | None) -> bool:
    return raw is None or not may_hold_pan(raw)


def _one_value_each(texts: list[bytes], blob: bytes | None = None) -> bool:
    """Each text is exactly one JSON object, nothing around it (one C-level skim of them
    all; ``blob``, the texts newline-joined, if at hand). (Arrow reads other values as rows
    of nulls, or crashes on ``null``.)

    The joined texts are read as whitespace-separated JSON values: as many as the texts,
    each as long as its text, and each text a ``{`` first. Then the first value starts where
    the first text does (at a ``{``), so it is that text, whole; the next starts after the
    newline, at the next text's ``{``; and so on to the last."""
    if not all(map(bytes.startswith, texts, repeat(b"{"))):
        return False
    try:
        found = _ONE_VALUE.decode_lines(b"\n".join(texts) if blob is None else blob)
    except msgspec.DecodeError:
        return False
    return list(map(len, found)) == list(map(len, texts))


def _one_value(text: bytes) -> bool:
    if not text.startswith(b"{"):
        return False
    try:
        return len(_ONE_VALUE.decode(text)) == len(text)
    except msgspec.DecodeError:
        return False


def _parse_block(
    parsed: _Parsed, indexes: list[int], texts: list[bytes], blob: bytes | None = None
) -> None:
    """Parse ``texts`` (records ``indexes`` of the roll; ``blob``, them newline-joined) as
    one block; if Arrow refuses it, its halves, down to ``_FLOOR`` records, which go record
    by record."""
    if blob is None:
        blob = b"\n".join(texts)
    for _ in range(3):  # each of amount and mcc may change type once
        try:
            table = pj.read_json(
                io.BytesIO(blob), read_options=_READ, parse_options=_VARIANTS[parsed.variant]
            )
        except pa.ArrowInvalid as exc:
            flipped = parsed.variant.flipped(str(exc))
            if flipped is None:
                break
            parsed.variant = flipped
            continue
        if table.num_rows == len(texts):  # one value a record: never otherwise
            parsed.blocks.append((indexes, _normalised(table, parsed.variant, texts)))
            return
        break
    parsed.retries_left -= len(texts)
    if len(texts) <= _FLOOR or parsed.retries_left < 0:
        parsed.slow.extend(indexes)
        return
    middle = len(texts) // 2
    _parse_block(parsed, indexes[:middle], texts[:middle])
    _parse_block(parsed, indexes[middle:], texts[middle:])


def _normalised(table: pa.Table, variant: _Variant, texts: list[bytes]) -> pa.Table:
    """``amount`` as a decimal and ``mcc`` as text whatever JSON type they came as, with
    ``amount_ok``/``mcc_ok``, whether they are values the checks can vouch for, and
    ``amount_text``, the amount as the record spells it (the validator's card-number check
    reads that text, and a JSON number's ``str(Decimal)`` is its text in the form vouched for).
    """
    if variant.amount_number:
        # Not Arrow's decimal: it reads a JSON string as a decimal too, and wraps a number too
        # large for the type. The number's own text, when the record names "amount" once.
        raw = pa.array(texts, pa.binary()).cast(pa.string())  # plain ASCII
        once = pc.equal(pc.count_substring(raw, '"amount"'), 1)
        text = pc.struct_field(pc.extract_regex(raw, _AMOUNT_NUMBER), "text")
        text = pc.if_else(once, text, pa.scalar(None, pa.string()))
    else:
        text = table.column("amount")
    amount_ok = pc.fill_null(pc.match_substring_regex(text, _AMOUNT_TEXT), False)
    amount = pc.cast(pc.if_else(amount_ok, text, "0"), AMOUNT)
    mcc = table.column("mcc")
    if variant.mcc_number:
        mcc_ok = pc.fill_null(pc.and_(pc.greater_equal(mcc, 0), pc.less_equal(mcc, 9999)), False)
        mcc = pc.utf8_lpad(pc.cast(mcc, pa.string()), 4, "0")
    else:
        mcc_ok = pc.fill_null(pc.match_substring_regex(mcc, r"^[0-9]{4}$"), False)
    columns = {name: table.column(name) for name in PAYMENT_FIELDS}
    columns.update(amount=amount, mcc=mcc, amount_ok=amount_ok, mcc_ok=mcc_ok, amount_text=text)
    return pa.table(columns)


def _certain(
    parsed: _Parsed,
    offsets: Sequence[int],
    timestamps: Sequence[int],
    keys: Sequence[bytes | None],
    partition: int,
    limits: Limits,
) -> tuple[pa.Table, pa.Array, list[int]]:
    """The rows the checks vouch for (``PAYMENTS``), their event hours, and the indexes of
    the parsed records they do not vouch for."""
    if not parsed.blocks:
        return PAYMENTS.empty_table(), pa.array([], pa.int64()), []
    indexes = [index for block, _ in parsed.blocks for index in block]
    table = pa.concat_tables([t for _, t in parsed.blocks])
    now = pa.array(timestamps, pa.int64())
    sources = pa.array(offsets, pa.int64())
    if len(indexes) < len(offsets):
        taken = pa.array(indexes, pa.int64())
        now, sources = now.take(taken), sources.take(taken)
    ts_ms, ts_ok = _event_ms(table.column("ts"))
    checks = [
        table.column("amount_ok"),
        table.column("mcc_ok"),
        _amount_allowed(table.column("amount"), limits),
        ts_ok,
        pc.less_equal(ts_ms, pc.add(now, limits.max_future_skew_ms)),
        pc.greater_equal(ts_ms, pc.subtract(now, limits.max_event_age_ms)),
        pc.is_in(table.column("currency"), value_set=_CURRENCIES),
        pc.is_in(table.column("country"), value_set=_COUNTRIES),
    ]
    for name in _STRING_FIELDS:
        column = table.column(name)
        length = pc.binary_length(column)
        checks.append(pc.less_equal(length, _MAX_LENGTH))
        # Not blank as str.strip() sees it: in plain ASCII JSON without escapes, the only
        # whitespace a string can hold is the space, so something in it is not a space
        # (counted, not trimmed: no copy of the column).
        checks.append(pc.less(pc.count_substring(column, " "), length))
    if parsed.field_checks or parsed.key_checks:
        checks.append(_no_card_number(parsed, indexes, table, keys))
    certain = checks[0]
    for check in checks[1:]:
        certain = pc.and_kleene(certain, check)  # null (a field missing) and false: false
    certain = pc.fill_null(certain, False)
    rows = pa.table(
        {
            **{name: table.column(name) for name in PAYMENT_FIELDS if name != "ts"},
            "ts": pc.cast(ts_ms, TIME),
            "kafka_partition": pc.cast(pa.repeat(partition, len(indexes)), pa.int32()),
            "kafka_offset": sources,
            "kafka_timestamp": pc.cast(now, TIME),
            # Only records that say neither their type nor a position come this way.
            **{name: pa.nulls(len(indexes), PAYMENTS.field(name).type) for name in EVENT_COLUMNS},
        }
    )
    # Whole hours: ts_ms >= 0 in every row vouched for, so integer division rounds down.
    hours = pc.divide(ts_ms, HOUR_MS)
    uncertain: list[int] = []
    if not pc.all(certain).as_py():
        doubtful = pc.indices_nonzero(pc.invert(certain)).to_pylist()
        uncertain = [indexes[i] for i in doubtful]
        rows, hours = rows.filter(certain), hours.filter(certain)
    return rows.select(PAYMENTS.names).cast(PAYMENTS), hours.combine_chunks(), uncertain


def _no_card_number(
    parsed: _Parsed, indexes: list[int], table: pa.Table, keys: Sequence[bytes | None]
) -> pa.Array:
    """For each parsed row, that the validator finds no card number in it: in a field of a
    record that holds a run of 13 digits (each field that holds one, read by ``contains_pan``
    as the validator reads it), or in a key that could hold one (then it must be the card
    id, which the validator does not check again)."""
    ok = [True] * len(indexes)
    rows = [row for row, index in enumerate(indexes) if index in parsed.field_checks]
    if rows:
        taken = pa.array(rows, pa.int64())
        for name in PAYMENT_FIELDS:
            column = table.column("amount_text" if name == "amount" else name).take(taken)
            # In plain ASCII JSON without escapes, spaces, dashes and full stops are the only
            # separators a string can hold: 13 digits among them, or no card number.
            runs = pc.fill_null(pc.match_substring_regex(column, _DIGIT_RUN), False)
            for found in pc.indices_nonzero(runs).to_pylist():
                if contains_pan(column[found].as_py()):
                    ok[rows[found]] = False
    rows = [row for row, index in enumerate(indexes) if index in parsed.key_checks]
    if rows:
        given = pa.array([keys[indexes[row]] for row in rows], pa.binary())
        card = pc.cast(table.column("card_id").take(pa.array(rows, pa.int64())), pa.binary())
        for row, same in zip(rows, pc.equal(given, card).to_pylist(), strict=True):
            ok[row] = ok[row] and bool(same)
    return pa.array(ok, pa.bool_())


def _amount_allowed(amount: pa.ChunkedArray, limits: Limits) -> pa.ChunkedArray:
    """From 0 to ``max_amount`` with at most ``max_amount_decimals`` places."""
    # Amounts have at most 12 places here: one is at most the bound when it is at most the
    # bound rounded down to 12 places.
    bound = limits.max_amount.quantize(Decimal("1e-12"), rounding=ROUND_FLOOR)
    zero = pa.scalar(Decimal(0), AMOUNT)
    within = pc.and_(
        pc.greater_equal(amount, zero), pc.less_equal(amount, pa.scalar(bound, AMOUNT))
    )
    # Rounded within the bounds only: rounding 10^26 would not fit the type.
    bounded = pc.if_else(within, amount, zero)
    places = pc.equal(pc.round(bounded, ndigits=limits.max_amount_decimals), bounded)
    return pc.and_(within, places)


def _event_ms(ts: pa.ChunkedArray) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """Each ``ts`` in milliseconds since the epoch as the validator reads it, and whether it
    has the one form this reads (else null or False)."""
    form = pc.fill_null(pc.match_substring_regex(ts, _TS), False)
    try:
        # Arrow's ISO 8601 parser refuses what the form admits but no calendar has (30
        # February, a 60th second), as datetime.fromisoformat does: then the whole column.
        moments = pc.cast(pc.if_else(form, ts, _EPOCH), _MICROS)
    except pa.ArrowInvalid:
        moments = _moments_one_by_one(ts, form)
    utc_us = pc.cast(moments, pa.int64())
    # From 1970 to 2255: int() rounds down, and a float holds the microseconds exactly.
    exact = pc.and_(pc.greater_equal(utc_us, 0), pc.less(utc_us, _FLOAT_EXACT))
    utc_us = pc.if_else(exact, utc_us, 0)
    # The validator: int(datetime.timestamp() * 1000), where timestamp() is the exact
    # microseconds divided by 10^6 as a float. The same float operations, in the same order.
    seconds = pc.divide(pc.cast(utc_us, pa.float64()), 1_000_000.0)
    ts_ms = pc.cast(pc.floor(pc.multiply(seconds, 1000.0)), pa.int64())
    return ts_ms, pc.and_(form, exact)


def _moments_one_by_one(ts: pa.ChunkedArray, form: pa.ChunkedArray) -> pa.Array:
    """:func:`_event_ms`'s cast when some ``ts`` of the form is no real moment: those are
    null."""
    found: list[object] = []
    for text, ok in zip(ts.to_pylist(), form.to_pylist(), strict=True):
        try:
            found.append(pc.cast(pa.scalar(text if ok else _EPOCH), _MICROS))
        except pa.ArrowInvalid:
            found.append(None)
    return pa.array(found, _MICROS)

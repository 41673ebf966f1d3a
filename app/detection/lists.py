"""Named lists and suppressions in force in this worker: the fold of two compacted topics.

One store, one entry type for both, because both are the same thing: a value on a named
scope, with an optional end, a reason and who wrote it.

* A **list entry** (lists topic, key ``<list>:<value>``) puts a value on a named list
  (``blocked_devices``, ``test_cards`` ...). Conditions read lists:
  ``{field: device_id, op: in, value: "@blocked_devices"}`` (``app.detection.conditions``).
* A **BIN list** is a list named ``bins`` or ending in ``_bins`` (``risky_bins``): its
  values are BINs, 6 or 8 digits, and only the payment's ``bin`` field reads it, where an
  8-digit BIN is on the list when it or its 6-digit prefix is (``ListBook.holds_bin``).
* A **suppression** (suppressions topic, key ``<rule_id>:<key>``) silences a rule's alerts
  for one group key (``key``), or for every key on a list (``key: "@trusted_merchants"``:
  an allowlist). The rule still evaluates and its alert is still published, with the status
  ``suppressed``: it consumes its events as any alert does (so disjointness and backtests do
  not depend on suppressions), is counted (``fraud_alerts_total{status="suppressed"}``), and is
  neither notified nor made a case.

Time. An entry is in force for a payment whose *event time* is before the entry's
``until`` (none: until removed), so a replay or a backtest decides as live did with the
same entries. An entry applies from the first payment decided after the worker read it
(processing order, like a rule), whatever that payment's event time.

Records are applied like rules: a tombstone removes the entry; a record that does not
validate is counted and ignored (applying never raises, so no record stops the follower).
The store holds at most ``max_entries`` entries, lists and suppressions together: a new
entry past the bound is refused (a poison record; the CLI and the API refuse it first),
after forgetting the entries that can no longer match anything (expired longer ago than
``forget_after_ms`` by the wall clock: the validator refuses payments that old).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from app.detection.models import Alert, iso_from_ms, ms_from_iso
from app.detection.pan import contains_pan, redact_text_cut

log = logging.getLogger(__name__)

LIST_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
RULE_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# A list reference in a condition or a suppression's key.
LIST_PREFIX = "@"
MAX_VALUE_CHARS = 200
MAX_REASON_CHARS = 500
MAX_BY_CHARS = 100
MAX_RECORD_BYTES = 4096
DEFAULT_MAX_ENTRIES = 100_000
SUPPRESSED = "suppressed"
BIN_LIST_SUFFIX = "_bins"
BIN_SHAPE = re.compile(r"^[0-9]{6}(?:[0-9]{2})?$")
LIST, SUPPRESSION = "list", "suppression"
# The JSON names of an entry's scope and value, by kind.
_NAMES = {LIST: ("list", "value"), SUPPRESSION: ("rule_id", "key")}


class ListError(ValueError):
    """A list entry or a suppression failed validation; ``field`` names the field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Entry:
    """A value on a list (``kind`` list: ``scope`` is the list's name) or a suppression
    (``kind`` suppression: ``scope`` is the rule id, ``value`` the group key or ``@list``)."""

    kind: str
    scope: str
    value: str
    until_ms: int | None
    reason: str
    by: str = ""
    added_ms: int = 0

    @property
    def record_key(self) -> str:
        return f"{self.scope}:{self.value}"

    def in_force(self, ts_ms: int) -> bool:
        """Whether the entry holds for an event at ``ts_ms`` (event time)."""
        return self.until_ms is None or ts_ms < self.until_ms

    def to_json(self) -> dict[str, Any]:
        scope, value = _NAMES[self.kind]
        return {
            scope: self.scope,
            value: self.value,
            "until": None if self.until_ms is None else iso_from_ms(self.until_ms),
            "reason": self.reason,
            "by": self.by,
            "added_at": iso_from_ms(self.added_ms),
        }

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode()

    def describe(self) -> str:
        """One line for an alert's explanation."""
        until = "until removed" if self.until_ms is None else f"until {iso_from_ms(self.until_ms)}"
        by = f" by {self.by}" if self.by else ""
        return f"{self.record_key} {until}{by}: {self.reason}"


def is_bin_list(name: str) -> bool:
    """Whether list ``name`` is a BIN list (``bins``, or a name ending in ``_bins``)."""
    return name == "bins" or name.endswith(BIN_LIST_SUFFIX)


def _text(where: str, raw: object, limit: int, required: bool = True) -> str:
    if raw is None and not required:
        return ""
    if not isinstance(raw, str) or (required and not raw.strip()):
        raise ListError(where, "must be a non-empty string" if required else "must be a string")
    if len(raw) > limit:
        raise ListError(where, f"must be at most {limit} characters")
    if any(ord(c) < 32 for c in raw):
        raise ListError(where, "must not hold control characters")
    if contains_pan(raw):
        # Lists hold card tokens (card_id), never card numbers; a BIN (6-8 digits) is no PAN.
        raise ListError(where, "looks like a card number (PAN): lists hold card tokens")
    return raw


def _time(where: str, raw: object) -> int | None:
    if raw is None:
        return None
    ms = ms_from_iso(raw) if isinstance(raw, str) and _zoned(raw) else None
    if ms is None:
        raise ListError(where, f"{raw!r} is not an ISO 8601 time with its zone")
    return ms


def _zoned(text: str) -> bool:
    return text.endswith("Z") or bool(re.search(r"[+-]\d\d:?\d\d$", text))


def parse_entry(kind: str, body: object) -> Entry:
    """A list entry (``kind`` LIST) or a suppression (SUPPRESSION) from its JSON body;
    ListError names the field."""
    if not isinstance(body, Mapping):
        raise ListError(kind, "must be a JSON object")
    scope_name, value_name = _NAMES[kind]
    unknown = set(body) - {scope_name, value_name, "until", "reason", "by", "added_at"}
    if unknown:
        raise ListError(kind, f"unknown fields {sorted(unknown)}")
    scope = body.get(scope_name)
    pattern = LIST_NAME if kind == LIST else RULE_ID
    if not isinstance(scope, str) or not pattern.match(scope):
        shape = (
            "1-64 characters of a-z, 0-9 and '_', starting with a letter"
            if kind == LIST
            else "1-64 characters of a-z, 0-9, '.', '_' or '-'"
        )
        raise ListError(scope_name, f"must be {shape}")
    value = _text(value_name, body.get(value_name), MAX_VALUE_CHARS)
    until_ms = _time("until", body.get("until"))
    if kind == SUPPRESSION:
        if value.startswith(LIST_PREFIX):
            list_name = value.removeprefix(LIST_PREFIX)
            if not LIST_NAME.match(list_name):
                raise ListError(value_name, f"{value!r} does not name a list (@name)")
            if is_bin_list(list_name):
                # Rules group by card, account, merchant, device or IP: never by a BIN.
                raise ListError(value_name, f"{value!r} is a BIN list: no group key is a BIN")
        elif until_ms is None:
            # A snooze ends by itself; only an allowlist (key @list) may stand until removed.
            raise ListError("until", "is required for a suppression of one key")
    elif value.startswith(LIST_PREFIX):
        raise ListError(value_name, f"must not start with {LIST_PREFIX!r}")
    elif is_bin_list(scope) and not BIN_SHAPE.match(value):
        raise ListError(
            value_name,
            f"list {scope!r} is a BIN list (its name ends in '_bins'): a value is a BIN,"
            " 6 or 8 digits",
        )
    reason = _text("reason", body.get("reason"), MAX_REASON_CHARS)
    by = _text("by", body.get("by"), MAX_BY_CHARS, required=False)
    added_ms = _time("added_at", body.get("added_at")) or 0
    return Entry(kind, scope, value, until_ms, reason, by, added_ms)


def parse_record(kind: str, raw: bytes) -> Entry:
    if len(raw) > MAX_RECORD_BYTES:
        raise ListError(kind, f"the record is larger than {MAX_RECORD_BYTES} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ListError(kind, f"not JSON: {exc}") from None
    return parse_entry(kind, body)


@dataclass
class ListBook:
    """Every list entry and suppression in force in this worker."""

    # list name -> value -> entry
    lists: dict[str, dict[str, Entry]] = field(default_factory=dict)
    # rule id -> group key or @list -> entry
    suppressions: dict[str, dict[str, Entry]] = field(default_factory=dict)
    max_entries: int = DEFAULT_MAX_ENTRIES
    # An entry expired longer ago than this (wall clock) may be forgotten: the validator
    # refuses payments older than FRAUD_MAX_EVENT_AGE, the same span.
    forget_after_ms: int = 30 * 24 * 3600 * 1000
    poison_records: int = 0
    refused_at_bound: int = 0
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    # Until ``loaded``: (topic, partition) -> (position, end offset at start).
    unread: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)

    def scopes(self, kind: str) -> dict[str, dict[str, Entry]]:
        return self.lists if kind == LIST else self.suppressions

    def size(self) -> int:
        return sum(len(v) for v in self.lists.values()) + sum(
            len(v) for v in self.suppressions.values()
        )

    def apply(self, kind: str, key: bytes | None, value: bytes | None) -> str:
        """Apply one record of the lists (``kind`` LIST) or suppressions topic; returns
        what happened. Never raises: an unforeseen error is a poison record like any other."""
        try:
            return self._apply(kind, key, value)
        except Exception as exc:
            self.poison_records += 1
            log.exception(
                "ignored %s record %r: %s", kind, redact_text_cut(repr(key), slice(80)), exc
            )
            return f"poison: internal error {type(exc).__name__}"

    def _apply(self, kind: str, key: bytes | None, value: bytes | None) -> str:
        record_key = key.decode(errors="replace") if key else ""
        if value is None:
            scope, sep, item = record_key.partition(":")
            if not sep:
                self.poison_records += 1
                return f"poison: tombstone key {redact_text_cut(record_key, slice(80))!r}"
            held = self.scopes(kind).get(scope)
            if held is not None and held.pop(item, None) is not None:
                if not held:
                    del self.scopes(kind)[scope]
                return f"removed {kind} {redact_text_cut(record_key, slice(80))}"
            return f"nothing to remove: {redact_text_cut(record_key, slice(80))}"
        try:
            entry = parse_record(kind, value)
        except ListError as exc:
            self.poison_records += 1
            log.warning("ignored invalid %s record: %s", kind, exc)
            return f"poison: {exc}"
        if record_key != entry.record_key:
            self.poison_records += 1
            return f"poison: key does not match {entry.record_key!r}"
        scopes = self.scopes(kind)
        known = entry.value in scopes.get(entry.scope, {})
        if not known and self.size() >= self.max_entries:
            self.forget_expired(int(time.time() * 1000))
            if self.size() >= self.max_entries:
                self.poison_records += 1
                self.refused_at_bound += 1
                log.warning(
                    "ignored %s %s: %d entries are held, the limit (FRAUD_MAX_LIST_ENTRIES)",
                    kind,
                    entry.record_key,
                    self.max_entries,
                )
                return f"poison: too many entries (limit {self.max_entries})"
        scopes.setdefault(entry.scope, {})[entry.value] = entry
        return f"applied {kind} {entry.record_key}"

    def forget_expired(self, now_ms: int) -> int:
        """Forget the entries expired before ``now_ms - forget_after_ms``; how many."""
        horizon = now_ms - self.forget_after_ms
        forgotten = 0
        for scopes in (self.lists, self.suppressions):
            for scope in list(scopes):
                held = scopes[scope]
                for item in [
                    k for k, e in held.items() if e.until_ms is not None and e.until_ms < horizon
                ]:
                    del held[item]
                    forgotten += 1
                if not held:
                    del scopes[scope]
        return forgotten

    def holds(self, name: str, value: str, ts_ms: int) -> bool:
        """Whether ``value`` is on list ``name`` for an event at ``ts_ms`` (event time). A
        list nobody has put an entry on is empty."""
        entries = self.lists.get(name)
        if entries is None:
            return False
        entry = entries.get(value)
        return entry is not None and (entry.until_ms is None or ts_ms < entry.until_ms)

    def holds_bin(self, name: str, value: str, ts_ms: int) -> bool:
        """:meth:`holds` for a BIN list: an 8-digit BIN is on it when it is, or when its
        first 6 digits are (an issuer's 6-digit entry covers its 8-digit ranges)."""
        return self.holds(name, value, ts_ms) or (
            len(value) == 8 and self.holds(name, value[:6], ts_ms)
        )

    def snapshot(self, name: str) -> tuple[Entry, ...]:
        """The entries of list ``name``."""
        return tuple(self.lists.get(name, {}).values())

    def install(self, name: str, entries: tuple[Entry, ...]) -> None:
        """Make ``entries`` the whole of list ``name`` (a process without a follower)."""
        if entries:
            self.lists[name] = {entry.value: entry for entry in entries}
        else:
            self.lists.pop(name, None)

    def entry(self, name: str, value: str) -> Entry | None:
        return self.lists.get(name, {}).get(value)

    def suppression(self, rule_id: str, group_key: str, ts_ms: int) -> Entry | None:
        """The suppression in force of ``rule_id`` for ``group_key`` at ``ts_ms``: one of the
        key itself first, then one naming a list the key is on (in list-name order)."""
        held = self.suppressions.get(rule_id)
        if not held:
            return None
        own = held.get(group_key)
        if own is not None and own.in_force(ts_ms):
            return own
        for key in sorted(k for k in held if k.startswith(LIST_PREFIX)):
            entry = held[key]
            if entry.in_force(ts_ms) and self.holds(
                key.removeprefix(LIST_PREFIX), group_key, ts_ms
            ):
                return entry
        return None

    def mark(self, alerts: tuple[Alert, ...]) -> tuple[Alert, ...]:
        """``alerts`` with each active one a suppression in force holds at its newest event's
        time given the status ``suppressed`` and the suppression in its explanation."""
        if not self.suppressions or not alerts:
            return alerts
        return tuple(self._marked(alert) for alert in alerts)

    def _marked(self, alert: Alert) -> Alert:
        if alert.status != "active":
            return alert
        ts_ms = ms_from_iso(alert.last_event_ts)
        entry = None if ts_ms is None else self.suppression(alert.rule_id, alert.group_key, ts_ms)
        if entry is None:
            return alert
        return replace(
            alert,
            status=SUPPRESSED,
            explanation=(*alert.explanation, ("suppressed", entry.describe())),
        )

    def entries(self, kind: str, scope: str | None = None) -> list[Entry]:
        """Every entry of ``kind`` (of one list or rule when ``scope`` is given), sorted."""
        scopes = self.scopes(kind)
        names = [scope] if scope is not None else sorted(scopes)
        return [e for name in names for _, e in sorted(scopes.get(name, {}).items())]

    def about(self, value: str) -> dict[str, list[dict[str, Any]]]:
        """The list entries holding ``value`` and the suppressions of its key, or of a list
        it is on (what ``/cards/{id}`` shows of a card)."""
        on_lists = [e for held in self.lists.values() for v, e in held.items() if v == value]
        names = {LIST_PREFIX + e.scope for e in on_lists}
        suppressed = [
            e
            for held in self.suppressions.values()
            for k, e in held.items()
            if k == value or k in names
        ]
        return {
            "lists": [e.to_json() for e in sorted(on_lists, key=lambda e: e.record_key)],
            "suppressions": [e.to_json() for e in sorted(suppressed, key=lambda e: e.record_key)],
        }


listbook = ListBook()
"""The worker's lists and suppressions: its follower (``agents.lists``) applies the two
topics to it; list conditions and ``mark`` read it."""

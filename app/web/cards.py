"""GET /cards/{card_id}: one card's state, answered by the worker that owns it."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from faust.web import Request, Response, View

from app.detection.engine import KeyState
from app.detection.lists import listbook
from app.detection.models import iso_from_ms, ms_from_iso
from app.detection.rulebook import rulebook
from app.web.cluster import (
    FORWARDED_BY,
    forward,
    locate_card,
    my_url,
    owns_partition,
    tables_recovered,
)
from app.web.params import BadParameter, bad_request, error, only, parse_card_id
from tables import card_alerts, card_state, high_value_counts


def high_value_windows(card_id: str, anchors_s: Iterable[float]) -> list[dict[str, Any]]:
    """The card's high-value counts, one per 5-minute window, oldest first.

    Faust has no API listing a key's windows, and scanning the whole table per
    request would not scale. The windows follow event time, so every window
    that can still be in the table ends within the table's expiry before one of
    the ``anchors_s`` (the wall clock and the card's own newest event times):
    probe exactly those window keys, as ``WindowWrapper`` itself would build them.
    """
    table = high_value_counts.table  # the underlying table, keyed (card_id, (start, end))
    window = table.window
    size = float(window.size)
    horizon = float(window.expires or 2 * 3600.0)
    # Window keys exactly as Faust builds them (a set: anchors' horizons overlap).
    ranges: set[tuple[float, float]] = set()
    for anchor in anchors_s:
        newest_start = window.ranges(anchor)[-1][0]
        for back in range(int(horizon // size) + 2):
            ranges.update(window.ranges(newest_start - back * size + size / 2))
    found = []
    for key_range in sorted(ranges):
        key = (card_id, key_range)
        if key in table:
            start_ms = round(key_range[0] * 1000)
            end_ms = start_ms + round(size * 1000)
            found.append(
                {
                    "start": iso_from_ms(start_ms),
                    "end": iso_from_ms(end_ms),
                    "start_ms": start_ms,
                    "end_ms": end_ms,
                    "count": table[key],
                }
            )
    return found


def read_card(card_id: str, now_s: float | None = None) -> dict[str, Any] | None:
    """Everything this worker's tables hold about a card; None if they hold nothing."""
    state = KeyState.from_json(card_state.get(card_id))
    alerts = list(card_alerts[card_id]) if card_id in card_alerts else []
    anchors = [time.time() if now_s is None else now_s]
    if state.newest_ts:
        anchors.append(state.newest_ts / 1000)
    if alerts and (last := ms_from_iso(alerts[-1].get("last_event_ts"))) is not None:
        anchors.append(last / 1000)
    windows = high_value_windows(card_id, anchors)
    # The lists holding the card and its suppressions (every worker holds them all).
    listed = listbook.about(card_id)
    empty = not state.rules and state.newest_ts is None and not alerts and not windows
    if empty and not listed["lists"] and not listed["suppressions"]:
        return None
    newest = state.newest_ts
    return {
        "card_id": card_id,
        "newest_event_ts": None if newest is None else iso_from_ms(newest),
        "rules": state.describe(),
        "high_value_windows": windows,
        "high_value_amount": str(rulebook.high_value_amount),
        "alerts": alerts,
        **listed,
    }


class CardView(View):
    """One card: recent qualifying events per rule, high-value windows, recent alerts."""

    async def get(self, request: Request, card_id: str) -> Response:
        try:
            only(request.query, ())
            card = parse_card_id(card_id)
        except BadParameter as exc:
            return bad_request(self, exc)
        where = locate_card(card)
        if where.owner is None:
            return error(
                self, 503, "no worker owns this card's partition yet", partition=where.partition
            )
        if not where.local:
            if request.headers.get(FORWARDED_BY):
                # Two workers disagree on the owner: a rebalance is under way.
                return error(
                    self,
                    503,
                    "this card's partition is moving between workers; retry",
                    partition=where.partition,
                )
            return await forward(self, request, where.owner)
        if not owns_partition(where.partition) or not tables_recovered():
            return error(
                self,
                503,
                "this card's partition is still recovering; retry",
                partition=where.partition,
            )
        body = read_card(card)
        if body is None:
            return error(self, 404, "unknown card", card_id=card, partition=where.partition)
        body["partition"] = where.partition
        body["served_by"] = my_url()
        return self.json(body)

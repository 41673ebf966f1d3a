"""app/web/cards.py: GET /cards/{card_id}, on a real aiohttp server over a faked runtime."""

from __future__ import annotations

import time
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web as aioweb
from aiohttp.test_utils import TestServer

from app.detection.models import iso_from_ms
from app.detection.rules import SEED_RULE
from app.web import (
    cards,
    cluster,
)
from app.worker.faust_app import app as faust_app
from app.worker.stats import WorkerStats
from tests.unit.web.fakes import (
    CARD,
    NOW_MS,
    FakeWindowedTable,
    alert,
    fake_rulebook,
    get,
    patch_web,
    run,
)


def test_unknown_card_is_404_json(worker: WorkerStats, monkeypatch: pytest.MonkeyPatch) -> None:
    patch_web(monkeypatch, "read_card", lambda card: None)

    async def check(session: aiohttp.ClientSession, base: str) -> None:
        for path in (f"/cards/{CARD}", f"/cards/{CARD}/"):
            status, body = await get(session, base + path)
            assert status == 404
            assert body["error"] == "unknown card" and body["card_id"] == CARD

    run(check)


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/cards/4111111111111111", "card_id"),  # a PAN, not a token
        ("/cards/" + "x" * 129, "card_id"),
        ("/cards/%20", "card_id"),
        (f"/cards/{CARD}?window=5", "window"),
    ],
)
def test_bad_card_parameters_are_400_naming_the_parameter(
    worker: WorkerStats, path: str, parameter: str
) -> None:
    async def check(session: aiohttp.ClientSession, base: str) -> None:
        status, body = await get(session, base + path)
        assert status == 400
        assert body["parameter"] == parameter and parameter in body["error"]

    run(check)


def test_card_view_reads_state_windows_and_alerts(
    worker: WorkerStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = {
        "t": NOW_MS,
        "r": {
            "high-value-burst": {
                "v": 1,
                "p": [[NOW_MS - 5_000, "t9", "1200.00", "US", ""]],
                "u": {"t1c": NOW_MS - 20_000, "t1a": NOW_MS - 60_000, "t1b": NOW_MS - 30_000},
            }
        },
    }
    windows = FakeWindowedTable()
    windows.add(CARD, NOW_MS / 1000, 4)
    windows.add(CARD, NOW_MS / 1000 - 300, 1)
    windows.add(CARD, NOW_MS / 1000 - 3 * 3600, 9)  # beyond the 2 h expiry: gone
    windows.add("tok_other", NOW_MS / 1000, 7)
    patch_web(monkeypatch, "card_state", {CARD: state})
    patch_web(monkeypatch, "card_alerts", {CARD: [alert(CARD).to_dict()]})
    patch_web(monkeypatch, "high_value_counts", SimpleNamespace(table=windows))

    async def check(session: aiohttp.ClientSession, base: str) -> None:
        status, body = await get(session, f"{base}/cards/{CARD}")
        assert status == 200
        assert body["card_id"] == CARD and body["partition"] == 2
        assert body["served_by"] == cluster.my_url()
        assert body["newest_event_ts"] == iso_from_ms(NOW_MS)
        rule = body["rules"]["high-value-burst"]
        assert rule["version"] == 1
        assert rule["pending"] == [
            {
                "ts": iso_from_ms(NOW_MS - 5_000),
                "ts_ms": NOW_MS - 5_000,
                "txn_id": "t9",
                "amount": "1200.00",
                "country": "US",
            }
        ]
        assert [e["txn_id"] for e in rule["alerted"]] == ["t1a", "t1b", "t1c"]
        start = (NOW_MS // 300_000) * 300_000
        assert [(w["start_ms"], w["end_ms"], w["count"]) for w in body["high_value_windows"]] == [
            (start - 300_000, start, 1),
            (start, start + 300_000, 4),
        ]
        assert [a["alert_id"] for a in body["alerts"]] == [alert(CARD).alert_id]

    run(check)


def test_card_view_says_what_each_kind_of_rule_holds(
    worker: WorkerStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sequence rule's waiting payments with the steps each may match (the state's JSON
    as the engine stores it: its fifth field is ``[step mask, kept values...]``); a
    first-seen rule's recent payments with their values, and the values seen before."""
    state = {
        "t": NOW_MS,
        "r": {
            "testing-then-cash-out": {
                "v": 2,
                "k": "sequence",
                "p": [[NOW_MS - 5_000, "t1", "1.00", "US", '[1,"m1"]', "f1"]],
                "u": {},
            },
            "new-device-high-value": {
                "v": 1,
                "k": "first_seen",
                "p": [[NOW_MS - 1_000, "t2", "900", "US", "dev-new", "f2"]],
                "u": {"t2": [NOW_MS - 1_000, "f2"]},
                "s": {"dev-old": NOW_MS - 3_600_000, "dev-usual": NOW_MS - 120_000},
            },
            "ten-times-usual-spend": {
                "v": 1,
                "k": "history",
                "p": [[NOW_MS - 9_000, "t0", "40", "US", "", "f0"]],
                "u": {},
            },
        },
    }
    patch_web(monkeypatch, "card_state", {CARD: state})
    patch_web(monkeypatch, "card_alerts", {})
    patch_web(monkeypatch, "high_value_counts", SimpleNamespace(table=FakeWindowedTable()))

    async def check(session: aiohttp.ClientSession, base: str) -> None:
        status, body = await get(session, f"{base}/cards/{CARD}")
        assert status == 200
        (pending,) = body["rules"]["testing-then-cash-out"]["pending"]
        assert (pending["txn_id"], pending["steps"]) == ("t1", [1])
        first_seen = body["rules"]["new-device-high-value"]
        assert [(e["txn_id"], e["value"]) for e in first_seen["pending"]] == [("t2", "dev-new")]
        assert [a["txn_id"] for a in first_seen["alerted"]] == ["t2"]
        assert [v["value"] for v in first_seen["seen"]] == ["dev-usual", "dev-old"]
        history = body["rules"]["ten-times-usual-spend"]
        assert [(e["txn_id"], e["amount"]) for e in history["pending"]] == [("t0", "40")]

    run(check)


def test_card_only_in_windows_is_known_and_card_in_nothing_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    windows = FakeWindowedTable()
    windows.add(CARD, time.time() - 3600, 2)  # an hour ago by the wall clock
    patch_web(monkeypatch, "card_state", {})
    patch_web(monkeypatch, "card_alerts", {})
    patch_web(monkeypatch, "high_value_counts", SimpleNamespace(table=windows))
    patch_web(monkeypatch, "rulebook", fake_rulebook([SEED_RULE]))
    body = cards.read_card(CARD)
    assert body is not None and [w["count"] for w in body["high_value_windows"]] == [2]
    assert body["rules"] == {} and body["alerts"] == []
    assert cards.read_card("tok_nobody") is None


def test_replayed_card_windows_are_found_from_the_cards_own_event_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A backlog hours behind the wall clock: the card's newest event time anchors the probe.
    old_ms = NOW_MS - 30 * 24 * 3600 * 1000
    windows = FakeWindowedTable()
    windows.add(CARD, old_ms / 1000, 3)
    patch_web(monkeypatch, "card_state", {CARD: {"t": old_ms, "r": {}}})
    patch_web(monkeypatch, "card_alerts", {})
    patch_web(monkeypatch, "high_value_counts", SimpleNamespace(table=windows))
    patch_web(monkeypatch, "rulebook", fake_rulebook([SEED_RULE]))
    body = cards.read_card(CARD)
    assert body is not None and [w["count"] for w in body["high_value_windows"]] == [3]


def test_card_not_owned_is_forwarded_once_and_the_owners_answer_passed_through(
    worker: WorkerStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen_headers: list[str | None] = []

    async def owner_handler(request: aioweb.Request) -> aioweb.Response:
        seen_headers.append(request.headers.get(cluster.FORWARDED_BY))
        return aioweb.json_response(
            {
                "card_id": request.match_info["card"],
                "served_by": "owner",
                "q": request.query_string,
            },
            status=200,
        )

    async def check(session: aiohttp.ClientSession, base: str) -> None:
        owner_app = aioweb.Application()
        owner_app.router.add_get("/cards/{card}", owner_handler)
        owner = TestServer(owner_app)
        await owner.start_server()
        faust_app.http_client = aiohttp.ClientSession()
        owner_url = str(owner.make_url("")).rstrip("/")
        try:
            patch_web(
                monkeypatch, "locate_card", lambda card: cluster.CardOwner(3, owner_url, False)
            )
            status, body = await get(session, f"{base}/cards/{CARD}")
            assert status == 200 and body == {"card_id": CARD, "served_by": "owner", "q": ""}
            assert seen_headers == [cluster.my_url()]
            # Already forwarded once and still not ours: a rebalance; never forward again.
            status, body = await get(
                session, f"{base}/cards/{CARD}", headers={cluster.FORWARDED_BY: "http://x:1"}
            )
            assert status == 503 and "moving" in body["error"]
            assert len(seen_headers) == 1
        finally:
            await owner.close()
        # The owner is gone: 503, not a hang or a 500.
        status, body = await get(session, f"{base}/cards/{CARD}")
        assert status == 503 and body["owner"] == owner_url
        await faust_app.http_client.close()

    run(check)


def test_card_is_503_while_unassigned_or_recovering(
    worker: WorkerStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def check(session: aiohttp.ClientSession, base: str) -> None:
        patch_web(monkeypatch, "locate_card", lambda card: cluster.CardOwner(1, None, False))
        status, body = await get(session, f"{base}/cards/{CARD}")
        assert status == 503 and body["partition"] == 1
        patch_web(
            monkeypatch, "locate_card", lambda card: cluster.CardOwner(1, cluster.my_url(), True)
        )
        patch_web(monkeypatch, "tables_recovered", lambda: False)
        async with session.get(f"{base}/cards/{CARD}") as response:
            assert response.status == 503 and response.headers["Retry-After"] == "1"

    run(check)

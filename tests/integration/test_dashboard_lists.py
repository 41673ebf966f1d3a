"""BIN lists end to end and the dashboard's lists panel, in headless Chromium on a real worker:
entries written over the HTTP API (a malformed BIN refused naming the field) reach the
worker's follower; payments whose 8-digit BINs fall under a listed 6-digit BIN fire the BIN
list example rule; the panel shows each list with its kind and entry count, a list's entries
(value, end, reason, who) when picked, and only the suppressions in force; a removal shows."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from app.rules_admin.topic import load_rule_file
from tests import factories
from tests.integration.harness import (
    REPO,
    Pipeline,
    Worker,
    alerts_on,
    http,
    keyed,
    produce,
    run,
    wait_until,
)
from tests.integration.test_dashboard import (
    HEIGHT,
    WIDTH,
    DevTools,
    chromium,
    chromium_binary,
    devtools_session,
    png_size,
    wait_true,
)
from tests.integration.test_lists import get

pytestmark = pytest.mark.integration

TOKEN = "dashboard-lists-token"


def test_bin_lists_fire_rules_and_the_dashboard_shows_lists_and_suppressions(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    chromium_binary()
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    (example,) = load_rule_file(REPO / "examples/rules/bin-list.yaml")
    pipeline.put_rules([replace(example, status="active")])
    pipeline.extra_env["FRAUD_API_TOKEN"] = TOKEN
    worker = pipeline.worker("lists-ui").start()
    base = f"http://127.0.0.1:{worker.web_port}"
    try:

        def post(path: str, body: dict[str, Any]) -> tuple[int, Any]:
            return http("POST", f"{base}{path}", body, token=TOKEN)

        bin_entry = {"value": "411111", "for": "30d", "reason": "BIN attack", "by": "ana"}
        assert post("/lists/risky_bins", bin_entry)[0] == 202
        status, refused = post("/lists/risky_bins", {**bin_entry, "value": "41111"})
        assert (status, refused["field"]) == (400, "value") and "BIN" in refused["error"]
        assert (
            post("/lists/blocked_devices", {"value": "dev-1", "reason": "takeover ring"})[0] == 202
        )
        two_hours = {"value": "dev-2", "for": "2h", "reason": "mule phone", "by": "bo"}
        assert post("/lists/blocked_devices", two_hours)[0] == 202
        snooze = {"rule_id": "high-value-burst", "key": "tok_z", "for": "2h"}
        assert (
            post("/suppressions", {**snooze, "reason": "merchant batch run", "by": "bo"})[0] == 202
        )
        short = {**snooze, "key": "tok_gone", "for": "3s", "reason": "over soon"}
        assert post("/suppressions", short)[0] == 202
        wait_until(lambda: get(worker, "/lists?limit=0")["count"] == 3, 30, "the entries applied")
        wait_until(lambda: get(worker, "/suppressions")["count"] == 2, 30, "suppressions applied")
        summary = get(worker, "/lists?limit=0")
        assert summary["entries"] == [] and summary["lists"] == [
            {"list": "blocked_devices", "bin_list": False, "entries": 2},
            {"list": "risky_bins", "bin_list": True, "entries": 1},
        ]

        capped = get(worker, "/lists/blocked_devices?limit=1")
        assert (capped["count"], [e["value"] for e in capped["entries"]]) == (2, ["dev-1"])
        assert http("GET", f"{base}/lists?limit=-1")[1]["parameter"] == "limit"
        assert http("GET", f"{base}/suppressions?active=yes")[1]["parameter"] == "active"

        # A BIN attack: five cards of 8-digit BINs under the listed 6-digit one, at one
        # merchant; five others of an unlisted BIN at another.
        now = int(time.time() * 1000)
        attack = [
            factories.payment(
                f"tok_bin_{n}", f"bin-a{n}", "3", now + n, merchant_id="m-bin", bin=f"411111{n}7"
            )
            for n in range(5)
        ]
        others = [
            factories.payment(
                f"tok_oth_{n}", f"bin-o{n}", "3", now + n, merchant_id="m-oth", bin="52222233"
            )
            for n in range(5)
        ]
        run(produce(pipeline.stack.bootstrap, pipeline.payments, keyed([*attack, *others])))
        (alert,) = alerts_on(pipeline, 1, idle_s=2.0, timeout_s=90)
        assert (alert.rule_id, alert.group_key) == ("risky-bin-attack", "m-bin")
        assert sorted(alert.txn_ids) == [p.txn_id for p in attack]

        with chromium(profile) as port:
            png = asyncio.run(drive(worker, port, base))
        (tmp_path / "dashboard-lists.png").write_bytes(png)
        assert png_size(png) == (WIDTH, HEIGHT)
    finally:
        worker.stop()


LISTS = "[...document.querySelectorAll('#lists tr[data-list]')].map(r => r.innerText)"
ENTRIES = "[...document.querySelectorAll('#list-entries tr[data-value]')].map(r => r.innerText)"
SUPPRESSIONS = "[...document.querySelectorAll('#suppressions tr[data-rule]')].map(r => r.innerText)"


async def texts(devtools: DevTools, expression: str) -> list[str]:
    found = await devtools.evaluate(f"JSON.stringify({expression})")
    rows: list[str] = json.loads(found)
    return [" | ".join(row.split("\t")) for row in rows]


async def drive(worker: Worker, port: int, base: str) -> bytes:
    async with devtools_session(port) as devtools:
        await devtools.open_page(f"{base}/")
        await wait_true(
            devtools,
            "the lists count",
            30,
            "document.getElementById('lists-toggle').innerText === 'lists: 2'",
        )
        assert await devtools.evaluate("document.getElementById('lists-panel').hidden") is True
        await devtools.evaluate("document.getElementById('lists-toggle').click(); true")
        await wait_true(devtools, "the lists listed", 30, f"{LISTS}.length === 2")
        assert await texts(devtools, LISTS) == [
            "blocked_devices | values | 2",
            "risky_bins | BINs | 1",
        ]

        # The suppression that ended is not shown; the one in force is, with why and who.
        await wait_true(
            devtools, "only the suppression in force", 30, f"{SUPPRESSIONS}.length === 1"
        )
        [shown] = await texts(devtools, SUPPRESSIONS)
        assert shown.startswith("high-value-burst | tok_z | ")
        assert shown.endswith(" | merchant batch run | bo")

        # Pick a list: its entries, each with its end, reason and who.
        await devtools.evaluate(
            "document.querySelector('#lists tr[data-list=risky_bins]').click(); true"
        )
        await wait_true(devtools, "the BIN list's entries", 30, f"{ENTRIES}.length === 1")
        [bin_row] = await texts(devtools, ENTRIES)
        assert bin_row.startswith("411111 | 20") and bin_row.endswith(" | BIN attack | ana")
        await devtools.evaluate(
            "document.querySelector('#lists tr[data-list=blocked_devices]').click(); true"
        )
        await wait_true(
            devtools,
            "the blocklist's entries",
            30,
            f"{ENTRIES}.length === 2 && {ENTRIES}[0].startsWith('dev-1')",
        )
        first, second = await texts(devtools, ENTRIES)
        assert first == "dev-1 | until removed | takeover ring | \u2013"
        assert second.startswith("dev-2 | 20") and second.endswith("Z | mule phone | bo")
        title = await devtools.evaluate("document.getElementById('list-entries-title').innerText")
        assert title == "blocked_devices: 2 entries"

        # A removal reaches the page within a refresh.
        status, _ = http("DELETE", f"{base}/lists/blocked_devices/dev-2", token=TOKEN)
        assert status == 202
        await wait_true(
            devtools,
            "the removal shown",
            30,
            f"{ENTRIES}.length === 1 && {LISTS}[0].endsWith('1')",
        )
        title = await devtools.evaluate("document.getElementById('list-entries-title').innerText")
        assert title == "blocked_devices: 1 entry"
        # The cases panel takes the lists panel's place.
        await devtools.evaluate("document.getElementById('cases-toggle').click(); true")
        assert await devtools.evaluate("document.getElementById('lists-panel').hidden") is True
        await devtools.evaluate("document.getElementById('lists-toggle').click(); true")
        assert await devtools.evaluate("document.getElementById('cases-panel').hidden") is True
        await wait_true(devtools, "the lists again", 30, f"{LISTS}.length === 2")
        assert devtools.errors() == []
        shot = await devtools.call("Page.captureScreenshot", format="png")
        return base64.b64decode(shot["data"])

"""The dashboard's cases panel in headless Chromium, on a real worker with its cases table
(DynamoDB Local) and labels topic (Kafka): bursts open cases, they are listed open first,
one is closed from the page (asking for the API token once), its status changes and its
label reaches the labels topic."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

from infra.local.stack import LocalStack
from tests.factories import payment
from tests.integration.harness import (
    Pipeline,
    Worker,
    http,
    keyed,
    produce,
    read_all,
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

pytestmark = pytest.mark.integration

TOKEN = "dashboard-cases-token"


def test_cases_are_listed_shown_and_closed_from_the_dashboard(
    pipeline: Pipeline, stack: LocalStack, tmp_path: Path
) -> None:
    chromium_binary()
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    pipeline.enable_sink()
    pipeline.extra_env["FRAUD_API_TOKEN"] = TOKEN
    start = int(time.time() * 1000) - 120_000
    # Two bursts of the seed rule on two cards; the one closed opened last, so "newest
    # first" alone would list it first, and "open first" does not.
    kept, closed = f"tok_keep_{pipeline.uid}", f"tok_shut_{pipeline.uid}"
    worker = pipeline.worker("cases-ui").start()
    try:
        base = f"http://127.0.0.1:{worker.web_port}"
        for count, card in enumerate((kept, closed), 1):
            burst = [payment(card, f"{card}-{n}", "1500", ts_ms=start + n * 1000) for n in range(3)]
            run(produce(stack.bootstrap, pipeline.payments, keyed(burst)))
            wait_until(
                lambda n=count: http("GET", f"{base}/cases?status=open")[1]["count"] == n,
                60,
                f"{count} case(s)",
            )
        # Newest first, the API lists the one to close first.
        assert [c["group_key"] for c in http("GET", f"{base}/cases")[1]["cases"]] == [closed, kept]
        [case] = http("GET", f"{base}/cases?key={closed}")[1]["cases"]
        with chromium(profile) as port:
            png = asyncio.run(drive(worker, port, case, kept))
        (tmp_path / "dashboard-cases.png").write_bytes(png)
        assert png_size(png) == (WIDTH, HEIGHT)

        # The worker has it closed, by whom the page said, and the label is on the topic.
        shown = http("GET", f"{base}/cases/{case['case_id']}")[1]
        assert (shown["status"], shown["disposition"], shown["closed_by"], shown["note"]) == (
            "closed",
            "not_fraud",
            "dana",
            "merchant's batch run",
        )
        [record] = run(read_all(stack.bootstrap, pipeline.labels, 1, idle_s=1.0, until=1))
        assert record.key == f"case:{case['case_id']}".encode()
        assert json.loads(record.value)["label"] == "not_fraud"
    finally:
        worker.stop()
        pipeline.drop_tables()


async def evaluate_json(devtools: DevTools, expression: str) -> Any:
    return json.loads(await devtools.evaluate(f"JSON.stringify({expression})"))


ROWS = "[...document.querySelectorAll('#cases tr[data-case-id]')].map(r => r.innerText)"


async def drive(worker: Worker, port: int, case: dict[str, Any], kept: str) -> bytes:
    async with devtools_session(port) as devtools:
        await devtools.open_page(f"http://127.0.0.1:{worker.web_port}/")
        # The header counts the open cases; the panel lists them.
        await wait_true(
            devtools,
            "the open count",
            30,
            "document.getElementById('cases-toggle').innerText === 'cases: 2 open'",
        )
        await devtools.evaluate("document.getElementById('cases-toggle').click(); true")
        await wait_true(devtools, "two cases listed", 30, f"{ROWS}.length === 2")
        # A filter by key leaves one.
        await devtools.evaluate(
            f"document.getElementById('cases-key').value = {json.dumps(kept)};"
            "document.querySelector('#cases-filter button').click(); true"
        )
        await wait_true(
            devtools, "the key filter", 30, f"{ROWS}.length === 1 && {ROWS}[0].includes('tok_keep')"
        )
        await devtools.evaluate(
            "document.getElementById('cases-key').value = '';"
            "document.querySelector('#cases-filter button').click(); true"
        )
        await wait_true(devtools, "both again", 30, f"{ROWS}.length === 2")

        # Pick the case: its alerts and payments, and the close form.
        case_id = case["case_id"]
        await devtools.evaluate(
            f"document.querySelector('#cases tr[data-case-id=\"{case_id}\"]').click(); true"
        )
        await wait_true(
            devtools, "the case's detail", 30, "!!document.getElementById('close-form')"
        )
        detail = await devtools.evaluate("document.getElementById('case-detail').innerText")
        assert case_id in detail and case["alert_ids"][0] in detail
        assert all(txn in detail for txn in case["txn_ids"]), detail

        # Close it: no token yet, so the page asks, then goes on with the close.
        await devtools.evaluate(
            "document.getElementById('close-disposition').value = 'not_fraud';"
            "document.getElementById('close-note').value = \"merchant's batch run\";"
            "document.getElementById('close-by').value = 'dana';"
            "document.querySelector('#close-form button[type=submit]').click(); true"
        )
        await wait_true(
            devtools, "the token asked for", 10, "document.getElementById('token-dialog').open"
        )
        await devtools.evaluate(
            f"document.getElementById('token-input').value = {json.dumps(TOKEN)};"
            "document.querySelector('#token-form button[value=use]').click(); true"
        )
        await wait_true(
            devtools,
            "the case shown closed",
            30,
            "document.getElementById('case-detail').dataset.status === 'closed'",
        )
        last = await evaluate_json(devtools, "window.dashboard.cases.lastClose")
        assert last == {"status": 200, "case_id": case_id}
        assert "Closed as not_fraud" in await devtools.evaluate(
            "document.getElementById('case-detail').innerText"
        )
        # Open cases first: the one still open, then the closed one (newer, but closed).
        await wait_true(
            devtools,
            "open first, closed after",
            30,
            f"{ROWS}.length === 2 && {ROWS}[0].includes('tok_keep')"
            f" && {ROWS}[1].includes('closed: not_fraud')",
        )
        await wait_true(
            devtools,
            "the open count down",
            30,
            "document.getElementById('cases-toggle').innerText === 'cases: 1 open'",
        )
        # A link to one case (the Slack message's button) opens the panel on it.
        await devtools.call("Page.navigate", url="about:blank")
        devtools.events.clear()
        await devtools.call(
            "Page.navigate", url=f"http://127.0.0.1:{worker.web_port}/#case={case_id}"
        )
        await devtools.wait_event("Page.loadEventFired", 30)
        await wait_true(
            devtools,
            "the linked case",
            30,
            # Null-safe: the load event awaited may be about:blank's, the page not there yet.
            "document.getElementById('cases-panel')?.hidden === false"
            " && document.getElementById('case-detail')?.dataset.caseId === "
            f"{json.dumps(case_id)}",
        )
        assert devtools.errors() == []
        shot = await devtools.call("Page.captureScreenshot", format="png")
        return base64.b64decode(shot["data"])

"""The dashboard in headless Chromium while alerts flow through a real worker.

Chromium is driven over the DevTools protocol (aiohttp's websocket client): the
test reads the page's own state (``window.dashboard``) and the DOM twice, some
seconds apart, to see the alert feed and the charts move, collects any script
error, and saves a 1280x800 screenshot of the live page.

Needs ``/usr/bin/chromium`` (Debian: ``apt-get install -y chromium``); without it
the test fails rather than skips, so a CI without a browser cannot pass silently.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from app.cases.labels import parse_chargebacks, publish_labels
from app.detection.models import Payment
from app.detection.rules import SEED_RULE, parse_rule
from tests import factories
from tests.integration.harness import Pipeline, Worker, wait_until

pytestmark = pytest.mark.integration

CHROMIUM_INSTALL = (
    "apt-get update && DEBIAN_FRONTEND=noninteractive"
    " apt-get install -y --no-install-recommends chromium fonts-dejavu-core"
)
WIDTH, HEIGHT = 1280, 800
SHADOW_RULE_ID = "burst-shadow"
# A second shadow rule that never fires (50 high-value payments): its evidence is asked for
# while the first one's is computed, gets 429, and comes after the Retry-After.
QUIET_RULE = parse_rule(
    {
        **SEED_RULE.to_json(),
        "rule_id": "big-burst-shadow",
        "status": "shadow",
        "threshold": {"op": ">=", "value": 50},
    }
)
TOKEN = "dashboard-test-token"


def chromium_binary() -> str:
    for candidate in (
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(f"Chromium not found; install it with: {CHROMIUM_INSTALL}")


def get_json(worker: Worker, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}{path}", timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)
    except OSError:
        return 0, None


def payment(card: str, txn_id: str, amount: Decimal, ts_ms: int) -> Payment:
    return factories.payment(card, txn_id, amount, ts_ms, currency="EUR", country="FR")


async def traffic(bootstrap: str, topic: str, stop: asyncio.Event, bursts: list[str]) -> None:
    """About 100 payments/s with a 3-payment high-value burst on a new card every 0.4 s."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    rng = random.Random(42)
    counter = itertools.count()
    try:
        while not stop.is_set():
            now_ms = int(time.time() * 1000)
            card = f"tok_dash{next(counter):012d}"
            bursts.append(card)
            for i in range(3):
                amount = Decimal(rng.randint(100_000, 900_000)) / 100
                burst = payment(card, f"{card}-{i}", amount, now_ms - 300 + 100 * i)
                await producer.send(topic, burst.to_json(), key=card.encode())
            for _ in range(40):
                small = f"tok_small{rng.randint(0, 500):04d}"
                amount = Decimal(rng.randint(50, 20_000)) / 100
                noise = payment(small, f"n-{next(counter)}", amount, now_ms)
                await producer.send(topic, noise.to_json(), key=small.encode())
            await asyncio.sleep(0.4)
        await producer.flush()
    finally:
        await producer.stop()


class DevTools:
    """Just enough of the Chrome DevTools protocol: calls, and events kept for later."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self.socket = socket
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        await self.socket.send_json({"id": call_id, "method": method, "params": params})
        while True:
            message = await self.socket.receive_json(timeout=30)
            if message.get("id") == call_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self.events.append(message)

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_event(self, method: str, within_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            for event in self.events:
                if event.get("method") == method:
                    return event
            with contextlib.suppress(TimeoutError):
                self.events.append(await self.socket.receive_json(timeout=0.5))
        raise AssertionError(f"no {method} within {within_s} s")

    async def open_page(self, url: str) -> None:
        """Script and page events on, the window's size set, ``url`` loaded."""
        await self.call("Runtime.enable")
        await self.call("Page.enable")
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            width=WIDTH,
            height=HEIGHT,
            deviceScaleFactor=1,
            mobile=False,
        )
        await self.call("Page.navigate", url=url)
        await self.wait_event("Page.loadEventFired", 30)

    def errors(self) -> list[str]:
        found = []
        for event in self.events:
            if event.get("method") == "Runtime.exceptionThrown":
                found.append(json.dumps(event["params"]["exceptionDetails"])[:500])
            if (
                event.get("method") == "Runtime.consoleAPICalled"
                and event["params"]["type"] == "error"
            ):
                found.append(json.dumps(event["params"]["args"])[:500])
        return found


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[int]:
    """Headless Chromium with DevTools on a free port (yielded); its process group ends after."""
    process = subprocess.Popen(
        [
            chromium_binary(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={WIDTH},{HEIGHT}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(profile.parent / "chromium.log").open("wb"),
        start_new_session=True,
    )
    try:
        # With port 0 Chromium picks a free port and writes it to DevToolsActivePort.
        port_file = profile / "DevToolsActivePort"
        wait_until(
            lambda: port_file.exists() and port_file.read_text().strip(), 30, "DevTools port"
        )
        yield int(port_file.read_text().split()[0])
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@contextlib.asynccontextmanager
async def devtools_session(port: int) -> AsyncIterator[DevTools]:
    """The DevTools protocol of the browser's first page."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
            targets = await response.json()
        page = next(t for t in targets if t["type"] == "page")
        async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as socket:
            yield DevTools(socket)


STATE_JS = """JSON.stringify({
  polls: window.dashboard.polls,
  errors: window.dashboard.errors,
  alertIds: window.dashboard.alertIds,
  throughputPoints: +document.getElementById('chart-throughput').dataset.points,
  throughputLastT: +document.getElementById('chart-throughput').dataset.lastT,
  throughputMax: +document.getElementById('chart-throughput').dataset.max,
  latencyPoints: +document.getElementById('chart-latency').dataset.points,
  rows: [...document.querySelectorAll('#alerts tr[data-alert-id]')].map(r => r.innerText),
  rules: document.getElementById('rules').innerText,
  outcomes: document.getElementById('outcomes').innerText,
  outcomesSummary: document.getElementById('outcomes-summary').innerText,
  kpiProcessed: document.getElementById('kpi-processed').innerText,
  health: document.getElementById('health').dataset.state,
  ready: document.getElementById('ready').dataset.state,
  scrollWidth: document.documentElement.scrollWidth,
  scrollHeight: document.documentElement.scrollHeight,
  // Layout faults: a box spilling out of its parent or over the next row.
  faults: (() => {
    const box = (el) => el.getBoundingClientRect();
    const inside = (a, b) => a.top >= b.top - 1 && a.bottom <= b.bottom + 1
      && a.left >= b.left - 1 && a.right <= b.right + 1;
    const faults = [];
    for (const canvas of document.querySelectorAll('canvas')) {
      if (!inside(box(canvas), box(canvas.closest('figure')))) faults.push(canvas.id + ' spills');
    }
    const rows = ['header', '.kpis', '.charts', '.bottom']
      .map((s) => box(document.querySelector(s)));
    for (let i = 1; i < rows.length; i++) {
      if (rows[i].top < rows[i - 1].bottom) faults.push('row ' + i + ' overlaps the one above');
    }
    if (rows[rows.length - 1].bottom > window.innerHeight) faults.push('page taller than window');
    for (const fig of document.querySelectorAll('figure, .card, .kpi')) {
      if (fig.scrollWidth > fig.clientWidth + 1) faults.push('wide content in ' + fig.className);
    }
    return faults;
  })(),
})"""


async def page_state(devtools: DevTools) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(await devtools.evaluate(STATE_JS))
    return state


async def wait_state(devtools: DevTools, what: str, within_s: float, check: Any) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    state = await page_state(devtools)
    while not check(state):
        if time.monotonic() > deadline:
            raise AssertionError(f"dashboard: no {what} within {within_s} s; state {state}")
        await asyncio.sleep(0.5)
        state = await page_state(devtools)
    return state


async def wait_true(devtools: DevTools, what: str, within_s: float, expression: str) -> None:
    deadline = time.monotonic() + within_s
    while not await devtools.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"dashboard: no {what} within {within_s} s")
        await asyncio.sleep(0.3)


async def enter_token(devtools: DevTools, token: str) -> None:
    """Click the shadow rule's evidence button and give the token in the dialog."""
    await devtools.evaluate(
        "document.querySelector('#rules [data-action=token]').click();"
        f"document.getElementById('token-input').value = {json.dumps(token)};"
        "document.querySelector('#token-form button[value=use]').click(); true"
    )
    assert await devtools.evaluate("document.getElementById('token-dialog').open") is False


async def wait_card_result(devtools: DevTools, within_s: float) -> dict[str, str]:
    deadline = time.monotonic() + within_s
    while True:
        found: dict[str, str] = json.loads(
            await devtools.evaluate(
                "JSON.stringify({state: document.getElementById('card-result').dataset.state,"
                " text: document.getElementById('card-result').innerText})"
            )
        )
        if found["state"] in ("ok", "error") or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_dashboard_shows_live_alerts_and_charts(pipeline: Pipeline, tmp_path: Path) -> None:
    chromium_binary()  # fail first, before starting anything, when there is no browser
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    # Shadow rules beside the seed rule: the rules panel shows their evidence (live alerts
    # beside a backtest on the archive).
    pipeline.put_rules([replace(SEED_RULE, rule_id=SHADOW_RULE_ID, status="shadow"), QUIET_RULE])
    pipeline.extra_env["FRAUD_ARCHIVE_ENABLED"] = "true"
    pipeline.extra_env["FRAUD_ARCHIVE_ROLL_SECONDS"] = "1"
    # Evidence reads the archive: the worker asks for its API token, the page for it once.
    pipeline.extra_env["FRAUD_API_TOKEN"] = TOKEN
    worker = pipeline.worker("w1").start()
    try:
        wait_until(lambda: get_json(worker, "/readyz")[0] == 200, 60, "worker ready")
        with chromium(profile) as port:
            png = asyncio.run(drive(pipeline, worker, port))
    finally:
        worker.stop()
    screenshot = tmp_path / "dashboard.png"
    screenshot.write_bytes(png)
    print(f"dashboard screenshot: {screenshot}")
    assert png_size(png) == (WIDTH, HEIGHT)


async def drive(pipeline: Pipeline, worker: Worker, port: int) -> bytes:
    """Open the dashboard while bursts flow; check it twice; return a screenshot (PNG)."""
    stop, bursts = asyncio.Event(), list[str]()
    producing = asyncio.create_task(
        traffic(pipeline.stack.bootstrap, pipeline.payments, stop, bursts)
    )
    try:
        async with devtools_session(port) as devtools:
            await devtools.call("Network.enable")  # to see the evidence requests' statuses
            await devtools.open_page(f"http://127.0.0.1:{worker.web_port}/")

            first = await wait_state(
                devtools,
                "alerts and chart points",
                60,
                lambda s: s["polls"] >= 2 and s["alertIds"] and s["throughputPoints"] > 0,
            )
            # A chargeback on the first burst's payments: the outcomes panel scores the rules
            # that caught it once the archive has it (it rolls every second here).
            caught = [f"{bursts[0]}-{i}" for i in range(3)]
            chargebacks = "".join(f"{txn_id},2026-12-01,stolen card\n" for txn_id in caught)
            labels = parse_chargebacks("txn_id,date,reason\n" + chargebacks)
            await publish_labels(pipeline.stack.bootstrap, pipeline.labels, labels)
            await asyncio.sleep(4)
            second = await wait_state(
                devtools,
                "newer alerts",
                30,
                lambda s: s["alertIds"] and s["alertIds"][0] not in first["alertIds"],
            )

            # The page polled without reloading, and nothing broke.
            assert second["polls"] >= first["polls"] + 3
            assert second["errors"] == 0 and devtools.errors() == []
            # The feed moved: newer alerts on top, for cards we sent bursts on.
            assert second["alertIds"][0] not in first["alertIds"]
            assert any(card in second["rows"][0] for card in bursts), second["rows"][0]
            assert "ms" in second["rows"][0]  # the latency column
            # The charts moved: a newer second plotted, and real throughput on them.
            assert second["throughputLastT"] > first["throughputLastT"]
            assert second["throughputPoints"] >= first["throughputPoints"]
            assert second["latencyPoints"] > 0 and second["throughputMax"] > 0
            # Rules panel, status pills, and a page that fits 1280x800 without scrolling.
            assert SEED_RULE.rule_id in second["rules"] and "v1" in second["rules"]
            # The shadow rule's evidence needs the token: without one the page asks for it
            # (and has fetched nothing); a wrong one is refused and asked for again.
            assert "evidence…" in second["rules"] and "backtest" not in second["rules"]
            assert "outcomes…" in second["outcomes"]  # likewise the rules' outcomes
            button = "document.querySelector('#rules [data-action=token]')"
            await enter_token(devtools, "not-the-token")
            await wait_true(
                devtools,
                "the wrong token refused",
                30,
                f"!!{button} && {button}.title.includes('refused')",
            )
            assert await devtools.evaluate("sessionStorage.getItem('fraud.apiToken')") is None
            await enter_token(devtools, TOKEN)
            assert await devtools.evaluate("sessionStorage.getItem('fraud.apiToken')") == TOKEN
            evidence = await wait_state(
                devtools,
                "both shadow rules' evidence",
                60,
                lambda s: len(re.findall(r"live \d+ · backtest \d+", s["rules"])) == 2,
            )
            assert SHADOW_RULE_ID in evidence["rules"] and QUIET_RULE.rule_id in evidence["rules"]
            assert "live 0 · backtest 0" in evidence["rules"]  # the quiet one
            asked = [
                (e["params"]["response"]["url"].split("/")[-2], e["params"]["response"]["status"])
                for e in devtools.events
                if e.get("method") == "Network.responseReceived"
                and "/evidence" in e["params"]["response"]["url"]
            ]
            # The wrong token was refused for both; one computation at a time: one of the two
            # waited its turn (429, more than once on a slow machine), then came back.
            statuses = [status for _, status in asked]
            assert set(statuses) == {200, 401, 429} and statuses.count(401) == 2, asked
            assert evidence["errors"] == 0 and devtools.errors() == []
            # The outcomes panel: each rule version's alerts judged by the labels. The burst
            # charged back was caught by the seed rule and its shadow copy: every labelled
            # alert of theirs is fraud, and they caught all the labelled fraud.
            scored = await wait_state(
                devtools,
                "the rules' outcomes",
                90,
                lambda s: s["outcomes"].count("100 %") >= 4,
            )
            lines = scored["outcomes"].splitlines()
            seed = next(line for line in lines if line.startswith(f"{SEED_RULE.rule_id} v1"))
            assert "active" in seed and "100 %\t100 %" in seed, seed
            assert any(line.startswith(SHADOW_RULE_ID) for line in lines)
            assert "3 fraud payments, 0 missed" in scored["outcomesSummary"]
            assert scored["errors"] == 0 and devtools.errors() == []
            assert scored["faults"] == [] and scored["scrollHeight"] <= HEIGHT
            assert second["health"] == "ok" and second["ready"] == "ok"
            assert second["scrollWidth"] <= WIDTH and second["scrollHeight"] <= HEIGHT
            assert second["faults"] == []

            # Clicking a card in the feed inspects it through /cards (the owning worker).
            card = await devtools.evaluate(
                "(() => { const cell = document.querySelector('#alerts td[data-card]');"
                " cell.click(); return cell.dataset.card; })()"
            )
            result = await wait_card_result(devtools, 15)
            assert result["state"] == "ok", result
            assert card in result["text"] and SEED_RULE.rule_id in result["text"]
            # Its burst raised two alerts: the seed rule's and the shadow copy's.
            assert "served by" in result["text"] and "Alerts: 2" in result["text"]

            shot = await devtools.call("Page.captureScreenshot", format="png")
            return base64.b64decode(shot["data"])
    finally:
        stop.set()
        await producing

"""Lists and suppressions on real Kafka: an entry added with the CLI makes a rule that reads
the list fire on the next payment; a suppression added with the CLI silences the next alert
of that rule for that key (published as ``suppressed``), and once it has ended the rule
alerts again; the HTTP API writes and refuses entries like the CLI."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest

from app.detection.models import Payment, iso_from_ms
from app.detection.rules import parse_rule
from tests import factories
from tests.integration.harness import (
    FAUST,
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

pytestmark = pytest.mark.integration
TOKEN = "test-token-not-a-secret"
BLOCKED_DEVICE = {
    "rule_id": "blocked-device",
    "version": 1,
    "description": "a payment from a device on the blocklist",
    "filter": [{"field": "device_id", "op": "in", "value": "@blocked_devices"}],
    "aggregate": "count",
    "window": 60,
    "threshold": {"op": ">=", "value": 1},
    "severity": "high",
}


def payment(txn_id: str, ts_ms: int) -> Payment:
    return factories.payment("tok_list_a", txn_id, "20", ts_ms, device_id="dev-x")


def cli(worker: Worker, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(FAUST), "-A", "app", *args],
        cwd=REPO,
        env=worker.env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


def get(worker: Worker, path: str) -> Any:
    status, body = http("GET", f"http://127.0.0.1:{worker.web_port}{path}")
    assert status == 200, body
    return body


def send_and_wait(pipeline: Pipeline, worker: Worker, p: Payment, processed: int) -> None:
    run(produce(pipeline.stack.bootstrap, pipeline.payments, keyed([p])))
    wait_until(lambda: get(worker, "/stats")["processed"] >= processed, 60, f"{p.txn_id} decided")


def test_a_blocklist_entry_fires_a_rule_and_a_suppression_silences_it_until_it_ends(
    pipeline: Pipeline,
) -> None:
    pipeline.put_rules([parse_rule(BLOCKED_DEVICE)])
    pipeline.extra_env["FRAUD_API_TOKEN"] = TOKEN
    worker = pipeline.worker().start()
    try:
        # Before the device is listed its payment qualifies for nothing.
        send_and_wait(pipeline, worker, payment("before", int(time.time() * 1000)), 1)

        out = cli(
            worker, "lists", "add", "blocked_devices", "dev-x", "--reason", "ring", "--for", "1h"
        )
        assert "published blocked_devices:dev-x" in out.stdout
        wait_until(
            lambda: get(worker, "/lists/blocked_devices")["count"] == 1, 30, "the entry applied"
        )
        send_and_wait(pipeline, worker, payment("listed", int(time.time() * 1000)), 2)
        (first,) = alerts_on(pipeline, 1, idle_s=1.0, timeout_s=60)
        assert (first.rule_id, first.txn_ids, first.status) == (
            "blocked-device",
            ("listed",),
            "active",
        )

        # Snoozed for this card until a time 40 s ahead, which payments' event times decide.
        until_ms = int(time.time() * 1000) + 40_000
        cli(
            worker,
            "suppressions",
            "add",
            "blocked-device",
            "tok_list_a",
            "--until",
            iso_from_ms(until_ms),
            "--reason",
            "known test card",
            "--by",
            "ana",
        )
        wait_until(lambda: get(worker, "/suppressions")["count"] == 1, 30, "suppression applied")
        card = get(worker, "/cards/tok_list_a")
        assert card["suppressions"][0]["reason"] == "known test card"
        assert card["suppressions"][0]["by"] == "ana"
        snoozed_ms = int(time.time() * 1000)
        assert snoozed_ms < until_ms - 1000, "the CLI took too long for this test's clock"
        send_and_wait(pipeline, worker, payment("snoozed", snoozed_ms), 3)

        # A payment dated at the end (within the allowed 30 s ahead of the clock) is past it,
        # while the wall clock is still before it: event time decides.
        time.sleep(max(0.0, (until_ms - 25_000) / 1000 - time.time()))
        send_and_wait(pipeline, worker, payment("after", until_ms), 4)
        assert time.time() * 1000 < until_ms
        alerts = alerts_on(pipeline, 3, idle_s=1.0, timeout_s=60)
        by_txn = {a.txn_ids[0]: a for a in alerts}
        assert set(by_txn) == {"listed", "snoozed", "after"}
        assert by_txn["snoozed"].status == "suppressed"
        assert "known test card" in dict(by_txn["snoozed"].explanation)["suppressed"]
        assert by_txn["after"].status == "active"
        counted = get(worker, "/stats")
        assert counted["alerts_by_rule"]["blocked-device"] == {"active": 2, "suppressed": 1}, (
            counted
        )
    finally:
        worker.stop()


def test_the_http_api_writes_refuses_and_removes_entries(pipeline: Pipeline) -> None:
    pipeline.extra_env["FRAUD_API_TOKEN"] = TOKEN
    worker = pipeline.worker().start()
    base = f"http://127.0.0.1:{worker.web_port}"
    try:
        entry = {"value": "m-9", "for": "2h", "reason": "chargeback ring", "by": "bo"}
        assert http("POST", f"{base}/lists/blocked_merchants", entry)[0] == 401
        status, body = http("POST", f"{base}/lists/blocked_merchants", entry, token=TOKEN)
        assert status == 202 and body["published"]["value"] == "m-9"
        pan = {**entry, "value": "4111111111111111"}
        status, body = http("POST", f"{base}/lists/blocked_merchants", pan, token=TOKEN)
        assert (status, body["field"]) == (400, "value") and "4111" not in body["error"]
        no_end = {"rule_id": "high-value-burst", "key": "tok_1", "reason": "why"}
        status, body = http("POST", f"{base}/suppressions", no_end, token=TOKEN)
        assert (status, body["field"]) == (400, "until")
        wait_until(lambda: get(worker, "/lists")["count"] == 1, 30, "the entry applied")
        status, _ = http("DELETE", f"{base}/lists/blocked_merchants/m-9", token=TOKEN)
        assert status == 202
        wait_until(lambda: get(worker, "/lists")["count"] == 0, 30, "the entry removed")
        assert http("DELETE", f"{base}/lists/blocked_merchants/m-9", token=TOKEN)[0] == 404
        status, body = http("DELETE", f"{base}/lists/cards/4111111111111111", token=TOKEN)
        assert (status, body["field"]) == (400, "value") and "4111" not in body["error"]
        shown = cli(worker, "lists", "show")
        assert shown.stdout == ""
    finally:
        worker.stop()


def test_a_deployment_without_the_lists_topics_keeps_detecting(pipeline: Pipeline) -> None:
    """Topics not created yet hold no entries: the worker gets ready and alerts as before."""
    pipeline.extra_env["FRAUD_TOPIC_LISTS"] = f"absent.lists.{pipeline.uid}"
    pipeline.extra_env["FRAUD_TOPIC_SUPPRESSIONS"] = f"absent.suppressions.{pipeline.uid}"
    worker = pipeline.worker().start()
    try:
        now = int(time.time() * 1000)
        burst = [factories.payment("tok_no_lists", f"b{i}", "1500", now + i) for i in range(3)]
        run(produce(pipeline.stack.bootstrap, pipeline.payments, keyed(burst)))
        (alert,) = alerts_on(pipeline, 1, idle_s=1.0, timeout_s=60)
        assert (alert.rule_id, alert.status) == ("high-value-burst", "active")
        assert get(worker, "/readyz")["checks"]["lists_topics_read"] is True
    finally:
        worker.stop()

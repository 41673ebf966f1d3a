"""Events beyond payments and geo-velocity end to end on real Kafka and DynamoDB Local: a
password reset then a payout (keyed by account) and impossible travel each alert, with
their explanation on the alerts topic, in the DynamoDB row and on /alerts; the logins
between them change nothing for the rules about payments."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from app.detection.models import iso_from_ms
from app.detection.rules import SEED_RULE, Rule
from app.rules_admin.topic import load_rule_file
from tests.integration.harness import (
    REPO,
    Pipeline,
    alerts_on,
    http,
    produce,
    read_all,
    run,
    wait_until,
)

pytestmark = pytest.mark.integration


def body(kind: str | None, txn_id: str, ts_ms: int, **fields: Any) -> bytes:
    event: dict[str, Any] = {"txn_id": txn_id, "account_id": "acct_ev_1", **fields}
    if kind is not None:
        event["type"] = kind
    event["ts"] = iso_from_ms(ts_ms)
    return json.dumps(event).encode()


def payment(txn_id: str, ts_ms: int, **fields: Any) -> bytes:
    usual = {
        "card_id": "tok_ev_card",
        "amount": "120.00",
        "currency": "GBP",
        "merchant_id": "m_ev",
        "mcc": "5411",
        "country": "GB",
        "device_id": "dev_owner",
        "ip": "203.0.113.5",
    }
    return body(None, txn_id, ts_ms, **{**usual, **fields})


def test_a_reset_then_payout_and_impossible_travel_alert_and_explain_themselves(
    pipeline: Pipeline,
) -> None:
    pipeline.enable_sink()
    kinds = {r.rule_id: r for r in load_rule_file(REPO / "examples/rules/kinds.yaml")}
    rules: list[Rule] = [SEED_RULE, kinds["reset-then-payout"], kinds["impossible-travel"]]
    pipeline.put_rules(rules)
    worker = pipeline.worker().start()
    try:
        # On a loaded machine the group can settle after "ready": produce once it holds
        # every partition of the payments topic and of the repartition topic.
        def holds_everything() -> bool:
            status, stats = http("GET", f"http://127.0.0.1:{worker.web_port}/stats?history=0")
            actives = stats["assignment"]["actives"] if status == 200 else {}
            everything = list(range(pipeline.partitions))
            return all(
                actives.get(topic) == everything
                for topic in (pipeline.payments, f"fraud-{pipeline.uid}-payments-by-group")
            )

        wait_until(holds_everything, 120, "the worker holding every partition")
        now = int(time.time() * 1000)
        records = [
            # Impossible travel: London, then New York 40 minutes later (card-present).
            (b"tok_ev_card", payment("ev-london", now - 3_000_000, lat="51.5072", lon="-0.1276")),
            (
                b"tok_ev_card",
                payment(
                    "ev-new-york",
                    now - 600_000,
                    country="US",
                    currency="USD",
                    lat=40.7128,
                    lon=-74.006,
                ),
            ),
            # Account takeover: a reset, a login from the thief's device, then a payout.
            (
                b"acct_ev_1",
                body("password_reset", "ev-reset", now - 500_000, device_id="dev_owner"),
            ),
            (
                b"acct_ev_1",
                body("login", "ev-login", now - 400_000, device_id="dev_thief", ip="198.51.100.9"),
            ),
            (
                b"acct_ev_1",
                body(
                    "payout",
                    "ev-payout",
                    now - 300_000,
                    amount="2500.00",
                    currency="GBP",
                    device_id="dev_thief",
                ),
            ),
            # A refund of 1000 or more three times is no high-value burst: the seed rule
            # names no type, so it counts payments only.
            *[
                (
                    b"tok_ev_card",
                    body(
                        "refund",
                        f"ev-refund-{n}",
                        now - 200_000 + n,
                        card_id="tok_ev_card",
                        amount="1500",
                        currency="GBP",
                        merchant_id="m_ev",
                    ),
                )
                for n in range(3)
            ],
            # Refused naming the field: a login with an amount.
            (b"acct_ev_1", body("login", "ev-bad", now, device_id="d", ip="i", amount="5")),
        ]
        run(produce(pipeline.stack.bootstrap, pipeline.payments, records))

        alerts = {a.rule_id: a for a in alerts_on(pipeline, 2, idle_s=5)}
        assert set(alerts) == {"reset-then-payout", "impossible-travel"}
        takeover, travel = alerts["reset-then-payout"], alerts["impossible-travel"]
        assert takeover.txn_ids == ("ev-reset", "ev-payout")
        assert takeover.group_key == "acct_ev_1" and takeover.steps == (1, 2)
        assert travel.txn_ids == ("ev-london", "ev-new-york")
        explained = dict(travel.explanation)
        assert explained["distance_km"] == "5570" and float(explained["speed_kmh"]) > 8000

        dead = run(read_all(pipeline.stack.bootstrap, pipeline.dlq, pipeline.partitions))
        reasons = {json.loads(r.value)["reason"] for r in dead}
        assert reasons == {"field_not_of_type"}, reasons

        # The explanation reaches the alerts table and /alerts.
        client = pipeline.stack.client()

        def row() -> dict[str, Any] | None:
            found = client.get_item(
                TableName=pipeline.alerts_table,
                Key={"alert_id": {"S": travel.alert_id}},
                ConsistentRead=True,
            )
            item: dict[str, Any] | None = found.get("Item")
            return item

        wait_until(lambda: row() is not None, 60, "the impossible-travel row")
        item = row()
        assert item is not None and item["kind"] == {"S": "geo_velocity"}
        assert item["explanation"]["M"]["distance_km"] == {"S": "5570"}
        status, listed = http("GET", f"http://127.0.0.1:{worker.web_port}/alerts/")
        assert status == 200
        shown = {a["rule_id"]: a for a in listed["alerts"]}
        assert shown["impossible-travel"]["explanation"]["distance_km"] == "5570"
    finally:
        worker.stop()
        pipeline.drop_tables()

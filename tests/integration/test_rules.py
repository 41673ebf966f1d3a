"""Rules as broadcast state: two workers on real Kafka obey every change without a restart."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from app.detection.forwarding import FORWARDED_BATCH_KEY, Forwarded, encode_forwarded
from app.detection.keys import group_record_key, key_partition
from app.detection.models import Alert, Payment, iso_from_ms
from app.detection.rules import SEED_RULE, parse_rule
from app.rules_admin.topic import load_rule_file, publish
from tests import factories
from tests.cli import assert_one_error_line, run_cli
from tests.integration.harness import (
    FAUST,
    REPO,
    Pipeline,
    Worker,
    alerts_on,
    http,
    produce,
    read_all,
    run,
)

pytestmark = pytest.mark.integration
TOKEN = "test-token-not-a-secret"
LONG_HISTORY = REPO / "examples" / "rules" / "long-history.yaml"


def rule_on(worker: Worker, rule_id: str) -> tuple[int, Any]:
    return http("GET", f"http://127.0.0.1:{worker.web_port}/rules/{rule_id}/")


def wait_everywhere(workers: list[Worker], check: Any, what: str, limit: float = 2.0) -> float:
    """Seconds until ``check(worker)`` holds on every worker; fails past ``limit``."""
    started = time.monotonic()
    while time.monotonic() - started < limit + 3:
        if all(check(w) for w in workers):
            elapsed = time.monotonic() - started
            assert elapsed <= limit, f"{what} took {elapsed:.2f} s (limit {limit} s)"
            return elapsed
        time.sleep(0.05)
    raise AssertionError(f"{what}: not on every worker after {limit + 3} s")


def cli(pipeline: Pipeline, worker: Worker, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FAUST), "-A", "app", "rules", *args],
        cwd=REPO,
        env=worker.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_repartition_records_batched_or_of_an_earlier_version_are_decided(
    pipeline: Pipeline,
) -> None:
    """The repartition topic carries a batch's forwarded payments in one record; records of
    the version before that (one payment, keyed by group) are still decided; an unreadable
    batch record and a late payment in a batch go to the DLQ with what they held."""
    pipeline.put_rules([parse_rule({**DEVICE_RULE, "status": "active"})])
    worker = pipeline.worker().start()
    now = int(time.time() * 1000)

    legacy_key = group_record_key(("device_id",), "dev-legacy")
    batch_key = group_record_key(("device_id",), "dev-batch")
    legacy = [
        payment_of(f"old-{i}", f"tok_old_{i}", now + i, device="dev-legacy") for i in range(3)
    ]
    batched = [
        payment_of(f"new-{i}", f"tok_new_{i}", now + i, device="dev-batch") for i in range(3)
    ]
    late = payment_of("new-late", "tok_new_9", now - 3_600_000, device="dev-batch")
    (batch_value,) = encode_forwarded([Forwarded(batch_key, now, p) for p in [*batched, late]])
    topic = f"fraud-{pipeline.uid}-payments-by-group"

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=pipeline.stack.bootstrap, acks="all")
        await producer.start()
        try:
            legacy_partition = key_partition(legacy_key, pipeline.partitions)
            for p in legacy:
                await producer.send_and_wait(
                    topic, p.to_json(), key=legacy_key.encode(), partition=legacy_partition
                )
            batch_partition = key_partition(batch_key, pipeline.partitions)
            for value in (b"[[not json", batch_value):
                await producer.send_and_wait(
                    topic, value, key=FORWARDED_BATCH_KEY, partition=batch_partition
                )
        finally:
            await producer.stop()

    try:
        run(send())
        alerts = [
            Alert.from_json(r.value)
            for r in run(
                read_all(pipeline.stack.bootstrap, pipeline.alerts, pipeline.partitions, until=2)
            )
        ]
        dead = [
            json.loads(r.value)
            for r in run(
                read_all(pipeline.stack.bootstrap, pipeline.dlq, pipeline.partitions, until=2)
            )
        ]
    finally:
        worker.stop()
    assert sorted((a.group_key, sorted(a.txn_ids)) for a in alerts) == [
        ("dev-batch", ["new-0", "new-1", "new-2"]),
        ("dev-legacy", ["old-0", "old-1", "old-2"]),
    ]
    by_reason = {d["reason"]: d for d in dead}
    assert sorted(by_reason) == ["bad_forwarded_record", "late_event"]
    assert by_reason["bad_forwarded_record"]["source"]["topic"] == topic
    assert base64.b64decode(by_reason["bad_forwarded_record"]["original_b64"]) == b"[[not json"
    assert by_reason["late_event"]["source"]["topic"] == topic
    assert base64.b64decode(by_reason["late_event"]["original_b64"]) == late.to_json()
    assert base64.b64decode(by_reason["late_event"]["original_key_b64"]) == batch_key.encode()


def cards_on_every_partition(partitions: int) -> list[str]:
    cards: dict[int, str] = {}
    index = 0
    while len(cards) < partitions:
        card = f"tok_rules_{index}"
        cards.setdefault((murmur2(card.encode()) & 0x7FFFFFFF) % partitions, card)
        index += 1
    return list(cards.values())


def payment_of(
    txn_id: str,
    card: str,
    ts_ms: int,
    *,
    amount: str = "20",
    country: str = "FR",
    device: str = "d",
) -> Payment:
    return Payment(
        txn_id=txn_id,
        card_id=card,
        account_id="acct",
        amount=Decimal(amount),
        currency="EUR",
        merchant_id="m",
        mcc="5411",
        country=country,
        device_id=device,
        ip="198.51.100.7",
        ts=iso_from_ms(ts_ms),
        ts_ms=ts_ms,
    )


DEVICE_RULE = {
    "rule_id": "shared-device",
    "version": 1,
    "status": "shadow",
    "severity": "high",
    "group_by": ["device_id"],
    "aggregate": "distinct_count(card_id)",
    "window": 600,
    "filter": [{"field": "amount", "op": ">=", "value": "1"}],
    "threshold": {"op": ">=", "value": 3},
}


def pairs(cards: list[str], country: str, start_ms: int, tag: str) -> list[tuple[bytes, bytes]]:
    records = []
    for card in cards:
        for i in range(2):
            ts = start_ms + i * 1000
            payment = payment_of(f"{tag}-{card}-{i}", card, ts, amount="150", country=country)
            records.append((card.encode(), payment.to_json()))
    return records


def country_pair_rule(rule_id: str, country: str) -> dict[str, Any]:
    return {
        "rule_id": rule_id,
        "version": 1,
        "status": "active",
        "severity": "low",
        "description": f"two payments from {country} on one card within a minute",
        "group_by": ["card_id"],
        "aggregate": "count",
        "window": 60,
        "filter": [{"field": "country", "op": "==", "value": country}],
        "threshold": {"op": ">=", "value": 2},
    }


def alerts_for(pipeline: Pipeline, rule_id: str) -> list[Alert]:
    records = run(
        read_all(pipeline.stack.bootstrap, pipeline.alerts, pipeline.partitions, idle_s=2.0)
    )
    return [a for a in (Alert.from_json(r.value) for r in records) if a.rule_id == rule_id]


def test_rule_changes_reach_every_worker_without_restart(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    pipeline.extra_env["FRAUD_API_TOKEN"] = TOKEN
    workers = [pipeline.worker("w1").start(), pipeline.worker("w2").start()]
    w1, w2 = workers
    cards = cards_on_every_partition(pipeline.partitions)
    try:
        # The seed rule published before start is in force everywhere.
        wait_everywhere(workers, lambda w: rule_on(w, SEED_RULE.rule_id)[0] == 200, "seed rule")

        # A rule put through the CLI.
        rule_file = tmp_path / "gb.yaml"
        rule_file.write_text(json.dumps(country_pair_rule("gb-pair", "GB")))
        put = cli(pipeline, w1, "put", str(rule_file))
        assert put.returncode == 0, put.stderr
        wait_everywhere(workers, lambda w: rule_on(w, "gb-pair")[0] == 200, "CLI put")
        now = int(time.time() * 1000)
        run(produce(pipeline.stack.bootstrap, pipeline.payments, pairs(cards, "GB", now, "a")))
        gb = alerts_for(pipeline, "gb-pair")
        assert sorted(a.group_key for a in gb) == sorted(cards), "every worker's cards alerted"

        # A rule put through the HTTP API: token required, validated, then published.
        base = f"http://127.0.0.1:{w2.web_port}/rules/fr-pair/"
        assert http("PUT", base, country_pair_rule("fr-pair", "FR"))[0] == 401
        status, body = http(
            "PUT", base, {**country_pair_rule("fr-pair", "FR"), "window": -5}, token=TOKEN
        )
        assert (status, body["field"]) == (400, "window")
        assert http("PUT", base, country_pair_rule("fr-pair", "FR"), token=TOKEN)[0] == 202
        wait_everywhere(workers, lambda w: rule_on(w, "fr-pair")[0] == 200, "HTTP put")

        # Pausing stops alerts.
        assert cli(pipeline, w2, "pause", "gb-pair").returncode == 0
        wait_everywhere(
            workers, lambda w: rule_on(w, "gb-pair")[1].get("status") == "paused", "pause"
        )
        now = int(time.time() * 1000)
        run(
            produce(
                pipeline.stack.bootstrap,
                pipeline.payments,
                pairs(cards, "GB", now, "b") + pairs(cards, "FR", now, "c"),
            )
        )
        assert len(alerts_for(pipeline, "fr-pair")) == len(cards), "workers kept processing"
        assert len(alerts_for(pipeline, "gb-pair")) == len(cards), "no alert from a paused rule"

        # A stale version and a poison record change nothing.
        stale = country_pair_rule("gb-pair", "GB")  # version 1; version 2 (paused) is in force
        pipeline_publish(
            pipeline,
            [("gb-pair", json.dumps(stale).encode()), ("gb-pair", b"\x00poison"), ("", b"{}")],
        )
        listing = cli(pipeline, w1, "list")
        assert "gb-pair\tv2\tpaused" in listing.stdout, listing.stdout
        time.sleep(1)
        for worker in workers:
            assert rule_on(worker, "gb-pair")[1]["version"] == 2
            assert worker.process is not None and worker.process.poll() is None

        # Deleting removes the rule everywhere.
        assert http("DELETE", base, token=TOKEN)[0] == 202
        wait_everywhere(workers, lambda w: rule_on(w, "fr-pair")[0] == 404, "HTTP delete")
        assert cli(pipeline, w1, "delete", "gb-pair").returncode == 0
        wait_everywhere(workers, lambda w: rule_on(w, "gb-pair")[0] == 404, "CLI delete")
    finally:
        for worker in workers:
            worker.stop()


def pipeline_publish(pipeline: Pipeline, records: list[tuple[str, bytes | None]]) -> None:
    run(publish(pipeline.stack.bootstrap, pipeline.rules, records))


def test_cli_refuses_a_bad_rule_an_unknown_id_a_missing_topic_and_bad_usage_in_one_line(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """The refusals that need a broker to answer (tests/unit/test_cli.py has the others):
    one line on stderr naming the problem, exit 1 (refused) or 2 (usage)."""
    worker = pipeline.worker("cli")  # only its environment; no process needed
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**country_pair_rule("x", "GB"), "aggregate": "median(amount)"}))
    assert_one_error_line(cli(pipeline, worker, "put", str(bad)), 1, "aggregate")
    assert_one_error_line(
        cli(pipeline, worker, "put", str(LONG_HISTORY)), 1, "window", "FRAUD_STATE_RETENTION"
    )
    assert_one_error_line(cli(pipeline, worker, "frobnicate"), 2, "'frobnicate'")
    for action in ("show", "pause", "activate", "delete"):
        unknown = cli(pipeline, worker, action, "no-such-rule")
        assert_one_error_line(unknown, 1, "no rule 'no-such-rule'", SEED_RULE.rule_id)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(country_pair_rule("gb-pair", "GB")))
    for args in (["list"], ["put", str(good)], ["show", SEED_RULE.rule_id]):
        # A topic of its own each time: asking for one may have the broker create it.
        no_topic = f"fraud.rules.missing-{args[0]}-{pipeline.uid}"
        missing = run_cli(["rules", *args], {**worker.env, "FRAUD_TOPIC_RULES": no_topic})
        assert_one_error_line(missing, 1, f"topic {no_topic!r} does not exist")
    assert cli(pipeline, worker, "list").stdout.split("\t")[0] == SEED_RULE.rule_id


def test_rule_grouped_by_device_sees_cards_of_every_partition(pipeline: Pipeline) -> None:
    """A device rule needs the repartition: its cards live on different partitions."""
    pipeline.put_rules([parse_rule(DEVICE_RULE)])
    worker = pipeline.worker().start()
    cards = cards_on_every_partition(pipeline.partitions)
    now = int(time.time() * 1000)
    records = [
        (card.encode(), payment_of(f"dev-{i}", card, now + i * 1000, device="dev-shared").to_json())
        for i, card in enumerate(cards)
    ]
    try:
        run(produce(pipeline.stack.bootstrap, pipeline.payments, records))
        records_out = run(
            read_all(
                pipeline.stack.bootstrap,
                pipeline.alerts,
                pipeline.partitions,
                until=1,
                idle_s=2.0,
                timeout_s=60,
            )
        )
    finally:
        worker.stop()
    alerts = [Alert.from_json(r.value) for r in records_out]
    assert [(a.rule_id, a.group_by, a.group_key, a.status) for a in alerts] == [
        ("shared-device", "device_id", "dev-shared", "shadow")
    ]
    # The four cards sit on four partitions, so they reach the device's partition in any
    # order: whichever three arrive first form the alert (all are within the window).
    assert len(alerts[0].txn_ids) == 3
    assert set(alerts[0].txn_ids) <= {"dev-0", "dev-1", "dev-2", "dev-3"}


def test_a_replay_across_a_rule_version_bump_does_not_alert_the_same_events_again(
    pipeline: Pipeline,
) -> None:
    """Version 1 alerted on a burst; then the payments are decided again from nothing (what a
    crash before the state write, a lost data directory or a new deployment on the same topics
    leaves) with version 2 in force: the events are used already, whatever version used
    them, so no second alert with another id."""
    pipeline.put_rules([SEED_RULE])
    now = int(time.time() * 1000)
    burst = [
        factories.payment("tok_bump", f"bump-{i}", "1500", now - 10_000 + i * 1000)
        for i in range(3)
    ]
    first = pipeline.worker("v1").start()
    try:
        run(
            produce(
                pipeline.stack.bootstrap,
                pipeline.payments,
                [(b"tok_bump", p.to_json()) for p in burst],
            )
        )
        (alert,) = alerts_on(pipeline, 1, idle_s=3.0, timeout_s=60.0)
    finally:
        first.stop()
    assert alert.rule_version == 1
    pipeline.put_rules([replace(SEED_RULE, version=2)])
    # A new group and empty tables on the same topics: the burst is decided again.
    pipeline.extra_env["FRAUD_APP_ID"] = f"fraud-{pipeline.uid}-replay"
    second = pipeline.worker("v2").start()
    try:
        wait_for_processed(second, 3)
        again = alerts_on(pipeline, 1, idle_s=3.0, timeout_s=60.0)
    finally:
        second.stop()
    assert [a.alert_id for a in again] == [alert.alert_id], "no second alert on the same events"


def wait_for_processed(worker: Worker, count: int) -> None:
    deadline = time.monotonic() + 60
    while worker.stats()["processed"] < count:
        assert time.monotonic() < deadline, "the replay decided the burst"
        time.sleep(0.2)


def test_every_rule_kind_alerts_on_real_kafka_explains_itself_and_is_refused_by_field(
    pipeline: Pipeline,
) -> None:
    """The example rule of each kind (examples/rules/kinds.yaml, made active) published on
    the rules topic: a card tested then cashed out, a card used from a new device; each
    alert says why, /cards shows each rule's state; a bad rule of a kind is refused by the
    API naming the nested field."""
    pipeline.extra_env["FRAUD_API_TOKEN"] = TOKEN
    kinds = load_rule_file(REPO / "examples" / "rules" / "kinds.yaml")
    pipeline.put_rules([replace(rule, status="active") for rule in kinds])
    worker = pipeline.worker().start()
    now = int(time.time() * 1000) - 30_000
    tested, taken = "tok_kinds_tested", "tok_kinds_taken"
    payments = [
        factories.payment(tested, "k-test", "1.00", now, merchant_id="m-small"),
        factories.payment(tested, "k-cash", "600", now + 10_000, merchant_id="m-big"),
        factories.payment(taken, "k-usual", "20", now, device_id="phone"),
        factories.payment(taken, "k-new", "900", now + 5_000, device_id="laptop"),
    ]
    try:
        run(produce(pipeline.stack.bootstrap, pipeline.payments, alerts_input(payments)))
        alerts = run(
            read_all(pipeline.stack.bootstrap, pipeline.alerts, pipeline.partitions, idle_s=2.0)
        )
        by_rule = {a.rule_id: a for a in (Alert.from_json(r.value) for r in alerts)}
        base = f"http://127.0.0.1:{worker.web_port}"
        status, card = http("GET", f"{base}/cards/{taken}")
        bad = {
            "rule_id": "bad-sequence",
            "version": 1,
            "kind": "sequence",
            "window": 60,
            "steps": [{}, {"filter": [{"field": "ip", "op": "==", "ref": "steps[1].ip"}]}],
        }
        refused = http("PUT", f"{base}/rules/bad-sequence/", bad, token=TOKEN)
        # A 60-day history the default state retention (8 days) cannot keep.
        (long,) = [r for r in load_rule_file(LONG_HISTORY) if r.kind == "history"]
        too_long = http("PUT", f"{base}/rules/{long.rule_id}/", long.to_json(), token=TOKEN)
    finally:
        worker.stop()
    sequence = by_rule["testing-then-cash-out"]
    assert (sequence.txn_ids, sequence.steps, sequence.kind) == (
        ("k-test", "k-cash"),
        (1, 2),
        "sequence",
    )
    first = by_rule["new-device-high-value"]
    assert first.txn_ids == ("k-new",) and dict(first.explanation)["value"] == "laptop"
    assert "abroad-risky-burst" not in by_rule
    assert status == 200
    seen = card["rules"]["new-device-high-value"]
    assert [e["value"] for e in seen["pending"]] == ["phone", "laptop"]
    assert [a["txn_id"] for a in seen["alerted"]] == ["k-new"]
    assert refused[0] == 400 and refused[1]["field"] == "steps[1].filter[0].ref"
    assert too_long[0] == 400 and too_long[1]["field"] == "window"
    assert "FRAUD_STATE_RETENTION" in too_long[1]["error"]


def alerts_input(payments: list[Payment]) -> list[tuple[bytes, bytes]]:
    return [(p.card_id.encode(), p.to_json()) for p in payments]

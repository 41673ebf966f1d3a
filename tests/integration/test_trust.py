"""A worker never looks healthy while missing fraud: hostile inputs and settings, real Kafka.

Each test plays a hostile producer or a new user: poison records between fraud bursts,
mis-keyed payments, a partition count that disagrees with the topics, a card number in
every field, poison rule records, and oversized or nested rule bodies over HTTP.
"""

from __future__ import annotations

import base64
import json
import random
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from app.detection.models import PAYMENT_FIELDS, Payment, iso_from_ms
from app.detection.rules import SEED_RULE, parse_rule
from app.generator import card_token
from app.rules_admin.topic import publish
from infra.local.stack import LocalStack
from tests import factories
from tests.cli import assert_one_error_line
from tests.integration.harness import (
    FAUST,
    REPO,
    Pipeline,
    Worker,
    alerts_on,
    free_port,
    produce,
    read_all,
    run,
    wait_until,
)
from tests.oracle import oracle
from tests.pan_variants import (
    CARD_NUMBERS,
    PAN,
    field_variants,
    readable_digits,
    readings,
    spellings,
)

pytestmark = pytest.mark.integration

TOKEN = "trust-token"


def payment(card: str, txn: str, ts_ms: int, amount: str = "1500", **fields: str) -> Payment:
    return factories.payment(card, txn, amount, ts_ms, currency="EUR", country="DE", **fields)


def raw_payment(**changes: Any) -> bytes:
    """A payment's JSON with some fields replaced by raw JSON text (``changes`` values)."""
    body = json.loads(payment("tok_raw", f"raw-{uuid.uuid4().hex[:8]}", now_ms()).to_json())
    encoded = {k: json.dumps(v) for k, v in body.items()}
    encoded.update(changes)
    return ("{" + ",".join(f'"{k}":{v}' for k, v in encoded.items()) + "}").encode()


def now_ms() -> int:
    return int(time.time() * 1000)


def burst(card: str, tag: str, start_ms: int) -> list[Payment]:
    return [payment(card, f"{tag}-{i}", start_ms + 1000 * i) for i in range(3)]


def http(worker: Worker, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{worker.web_port}{path}",
        data=body,
        method=method,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def dead_letters(pipeline: Pipeline, expected: int) -> list[dict[str, Any]]:
    records = run(
        read_all(
            pipeline.stack.bootstrap,
            pipeline.dlq,
            pipeline.partitions,
            until=expected,
            idle_s=2.0,
            timeout_s=120.0,
        )
    )
    return [json.loads(r.value) for r in records]


def fuzz_records(rng: random.Random, count: int) -> list[tuple[bytes | None, bytes | None]]:
    """Random bytes and random JSON objects over the payment's field names, keys random too."""
    names = sorted(json.loads(payment("tok", "t", now_ms()).to_json()))

    def value(depth: int = 0) -> Any:
        kind = rng.randrange(7 if depth < 3 else 5)
        if kind == 0:
            return rng.randint(-(10**30), 10**30)
        if kind == 1:
            return rng.choice([1e308, -0.0, 3.5, 1e-300])
        if kind == 2:
            return "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(20)))
        if kind == 3:
            return rng.choice([None, True, False])
        if kind == 4:
            return rng.choice(["EUR", "DE", "5411", "1000.00", iso_from_ms(now_ms())])
        if kind == 5:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        return {rng.choice(names): value(depth + 1) for _ in range(rng.randrange(4))}

    records: list[tuple[bytes | None, bytes | None]] = []
    for index in range(count):
        key = None if index % 5 == 0 else rng.randbytes(rng.randrange(1, 24))
        if index % 2:
            records.append((key, rng.randbytes(rng.randrange(0, 512))))
        else:
            body = {name: value() for name in names if rng.random() < 0.8}
            records.append((key, json.dumps(body).encode()))
    return records


def poison_records() -> list[tuple[bytes | None, bytes | None, str]]:
    """(key, value, the DLQ reason it must get): each once stopped or fooled the agent."""
    return [
        (b"tok_x", b"[" * 6000 + b"]" * 6000, "unparseable"),  # RecursionError in json
        (b"tok_x", raw_payment(amount="1e9999999999999999999999"), "amount_out_of_range"),
        (b"tok_x", raw_payment(amount="9e999999"), "amount_out_of_range"),
        (b"tok_x", raw_payment(amount='"1e999999"'), "amount_out_of_range"),
        (b"tok_x", raw_payment(amount='"0.0000001"'), "amount_out_of_range"),
        (b"tok_x", raw_payment(note=json.dumps("x" * 1_000_000)), "oversize"),
        (b"tok_x", bytes(range(256)) * 4, "unparseable"),
        (b"tok_x", None, "empty"),
        (PAN.encode(), raw_payment(card_id=json.dumps(PAN)), "pan_in_card_id"),
        (b"tok_x", raw_payment(device_id=json.dumps(PAN)), "pan_in_field"),
    ]


def test_poison_records_are_dead_lettered_and_every_burst_around_them_alerts(
    pipeline: Pipeline,
) -> None:
    # A sum rule too: amounts like 9e999999 used to overflow its arithmetic.
    sum_rule = parse_rule(
        {
            "rule_id": "big-spend",
            "version": 1,
            "aggregate": "sum(amount)",
            "window": 300,
            "threshold": {"op": ">=", "value": "4000"},
        }
    )
    pipeline.put_rules([sum_rule])
    # Ten bursts 10 s apart, the last of them still behind the workers' clocks.
    start = now_ms() - 120_000
    poisons = poison_records()
    records: list[tuple[bytes | None, bytes | None]] = []
    payments: list[Payment] = []
    # Well-keyed, null-keyed and txn-keyed bursts, with every poison record in between.
    for i, (key, value, _) in enumerate(poisons):
        for keying in ("card", "null", "txn"):
            card = f"tok_{keying}_{i}"
            for p in burst(card, f"b{i}{keying}", start + 10_000 * i):
                record_key = {"card": card.encode(), "null": None, "txn": p.txn_id.encode()}
                records.append((record_key[keying], p.to_json()))
                payments.append(p)
            records.append((key, value))
    expected = {
        (rule.rule_id, key, txn_ids)
        for rule in (SEED_RULE, sum_rule)
        for key, txn_ids in oracle(payments, rule)
    }

    worker = pipeline.worker().start()
    try:
        run(produce(pipeline.stack.bootstrap, pipeline.payments, records))
        alerts = alerts_on(pipeline, len(expected), idle_s=2.0, timeout_s=120.0)
        dead = dead_letters(pipeline, 3 * len(poisons))

        # Random bytes and random JSON (seeded): each is a reason on the DLQ, never a crash.
        fuzz = fuzz_records(random.Random(8), 60)
        fuzz_burst = burst("tok_fuzz", "fuzz", now_ms() - 30_000)
        run(
            produce(
                pipeline.stack.bootstrap,
                pipeline.payments,
                [*fuzz, *((b"tok_fuzz", p.to_json()) for p in fuzz_burst)],
            )
        )
        fuzzed = dead_letters(pipeline, 3 * len(poisons) + len(fuzz))

        # 100 poison records, then a burst: it alerts within 2 s of its last payment.
        late_start = now_ms()
        tail = [(key, value) for _ in range(10) for key, value, _ in poisons]
        last_burst = burst("tok_behind", "behind", late_start)
        run(
            produce(
                pipeline.stack.bootstrap,
                pipeline.payments,
                [*tail, *((b"tok_behind", p.to_json()) for p in last_burst)],
            )
        )
        every = alerts_on(pipeline, len(expected) + 4, idle_s=2.0, timeout_s=120.0)
        behind = [a for a in every if a.group_key == "tok_behind"]
        status, health = http(worker, "GET", "/healthz")
        assert worker.process is not None and worker.process.poll() is None, "worker alive"
    finally:
        worker.stop()

    assert {(a.rule_id, a.group_key, a.txn_ids) for a in alerts} == expected
    assert len(alerts) == len(expected), "no alert twice"
    # Each poison record stood after a well-keyed, a null-keyed and a txn-keyed burst.
    assert sorted(d["reason"] for d in dead) == sorted(3 * [reason for *_, reason in poisons])
    oversize = next(d for d in dead if d["reason"] == "oversize")
    assert oversize["original_truncated"] is True and oversize["original_size"] > 1_000_000
    assert len(oversize["original_sha256"]) == 64
    # Every fuzz record is on the DLQ too, each with a reason of its own kind.
    assert len(fuzzed) == 3 * len(poisons) + len(fuzz)
    assert "internal_error" not in Counter(d["reason"] for d in fuzzed)
    assert {a.rule_id for a in every if a.group_key == "tok_fuzz"} == {
        "high-value-burst",
        "big-spend",
    }
    assert {a.rule_id for a in behind} == {"high-value-burst", "big-spend"}
    for alert in behind:
        detected_ms = datetime.fromisoformat(alert.detected_at).timestamp() * 1000
        assert detected_ms - alert.trigger_produced_at_ms < 2000, "alerted within 2 s"
    assert status == 200, health
    assert health["checks"]["internal_errors"]["total"] == 0
    assert health["checks"]["agents"]["crashes"] == {}, "no agent crashed or restarted"


def test_a_partition_count_that_disagrees_with_the_topics_stops_the_worker_at_start(
    pipeline: Pipeline,
) -> None:
    wrong = pipeline.worker("wrong")
    wrong.env["FRAUD_PARTITIONS"] = "8"
    with pytest.raises(AssertionError, match="exited"):
        wrong.start(ready_timeout=60)
    assert wrong.process is not None and wrong.process.returncode != 0
    line = f"FRAUD_PARTITIONS=8 but topic '{pipeline.payments}' has 4 partitions"
    assert line in wrong.log_text()

    derived = pipeline.worker("derived")
    del derived.env["FRAUD_PARTITIONS"]
    derived.start()
    try:
        assert "using 4 partitions, from topic" in derived.log_text()
        cards = burst("tok_derived", "derived", now_ms())
        run(
            produce(
                pipeline.stack.bootstrap,
                pipeline.payments,
                [(p.card_id.encode(), p.to_json()) for p in cards],
            )
        )
        alerts = alerts_on(pipeline, 1, idle_s=2.0, timeout_s=120.0)
    finally:
        derived.stop()
    assert [a.txn_ids for a in alerts] == [tuple(p.txn_id for p in cards)]


def _topics_of(stack: LocalStack, needle: str) -> dict[str, int]:
    async def describe() -> dict[str, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
        await admin.start()
        try:
            names = [n for n in await admin.list_topics() if needle in n]
            described = await admin.describe_topics(names)
        finally:
            await admin.close()
        return {str(t["topic"]): len(t["partitions"]) for t in described}

    result: dict[str, int] = run(describe())
    return result


def _visible_bytes(record: Any) -> bytes:
    """A record's key and value, with any base64 fields of a DLQ record decoded too."""
    parts = [record.key or b"", record.value or b""]
    try:
        body = json.loads(record.value)
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict):
        for name in ("original_b64", "original_key_b64"):
            if body.get(name):
                parts.append(base64.b64decode(body[name]))
    return b"\n".join(parts)


def _archived_rows(root: Path) -> list[dict[str, Any]]:
    """Every row of every Parquet file of the archive."""
    return [
        row for path in sorted(root.rglob("*.parquet")) for row in pq.read_table(path).to_pylist()
    ]


def _holding_card_numbers(text: str, numbers: list[str]) -> list[str]:
    """The card numbers whose digits can be read in ``text`` (escaped, separated, ...)."""
    readable = readable_digits(text)
    return [digits for digits in numbers if digits in readable]


def test_no_card_number_reaches_any_topic_state_log_table_or_archive(
    pipeline: Pipeline, stack: LocalStack
) -> None:
    pipeline.enable_sink()
    table = pipeline.alerts_table
    archive = pipeline.tmp / "archive"
    pipeline.extra_env.update(
        {
            "FRAUD_ARCHIVE_ENABLED": "true",
            "FRAUD_ARCHIVE_URL": str(archive),
            "FRAUD_ARCHIVE_ROLL_SECONDS": "1",
        }
    )
    # A rule grouped by device, so payments also travel the repartition topic by group.
    pipeline.put_rules(
        [parse_rule({**SEED_RULE.to_json(), "rule_id": "device-burst", "group_by": ["device_id"]})]
    )
    numbers = [CARD_NUMBERS[n] for n in ("visa", "amex", "visa-19")]
    variants = [literal for digits in numbers for literal in field_variants(digits).values()]
    refused: list[tuple[bytes | None, bytes | None]] = []
    reasons: Counter[str] = Counter()
    # Every spelling in every field, the key being the card id (only the value is wrong)...
    for name in PAYMENT_FIELDS:
        for literal in variants:
            refused.append((b"tok_raw", raw_payment(**{name: literal})))
            reasons["pan_in_card_id" if name == "card_id" else "pan_in_field"] += 1
    # ...and as the Kafka key of a good payment: as text (escapes as written), and in UTF-16.
    for literal in variants:
        text = json.loads(literal) if "\\u" not in literal else literal.strip('"')
        for key in (text.encode(), text.encode("utf-16-le")):
            refused.append((key, raw_payment()))
            reasons["pan_in_key"] += 1
    # A whole payment in UTF-16 (JSON decoders read it) with the number in non-ASCII digits.
    body = json.loads(raw_payment())
    body["card_id"] = spellings(PAN)["arabic-indic digits"]
    refused.append((b"tok_raw", json.dumps(body, ensure_ascii=False).encode("utf-16")))
    reasons["pan_in_card_id"] += 1

    # Tokens that hold digits are accepted and detected: a 16-digit run in no network's
    # range, well keyed; a generator token, keyed by txn id (re-keyed through the
    # repartition topic).
    start = now_ms() - 30_000
    digit_token = burst("tok_7567273142341000", "digits", start)
    txn_keyed = burst(card_token(random.Random(5)), "rekeyed", start)
    accepted = [(p.card_id.encode(), p.to_json()) for p in digit_token]
    accepted += [(p.txn_id.encode(), p.to_json()) for p in txn_keyed]

    worker = pipeline.worker("pan").start()
    try:
        run(produce(pipeline.stack.bootstrap, pipeline.payments, [*refused, *accepted]))
        alerts = alerts_on(pipeline, 4, idle_s=2.0, timeout_s=120.0)
        dlq = dead_letters(pipeline, len(refused))
        wait_until(
            lambda: stack.client().scan(TableName=table, Select="COUNT")["Count"] >= 4,
            60,
            "the alert rows",
        )
        wait_until(
            lambda: sum(1 for r in _archived_rows(archive) if "reason" in r) >= len(refused),
            60,
            "the archived dead letters",
        )
    finally:
        worker.stop()
    assert sorted((a.rule_id, a.group_key) for a in alerts) == sorted(
        [
            ("device-burst", digit_token[0].device_id),
            ("device-burst", txn_keyed[0].device_id),
            ("high-value-burst", digit_token[0].card_id),
            ("high-value-burst", txn_keyed[0].card_id),
        ]
    )
    assert Counter(d["reason"] for d in dlq) == reasons

    # Every topic of this deployment but the source itself: DLQ, alerts, changelogs, the
    # repartition topic; their raw bytes, and a DLQ copy's decoded original and key.
    topics = _topics_of(stack, pipeline.uid)
    topics.pop(pipeline.payments)
    assert any("changelog" in t for t in topics) and any("by-group" in t for t in topics)
    for topic, partitions in topics.items():
        for record in run(read_all(stack.bootstrap, topic, partitions, idle_s=1.0)):
            seen = _holding_card_numbers(readings(_visible_bytes(record)), numbers)
            assert not seen, f"card number {seen} in {topic}: {record}"
    assert not _holding_card_numbers(worker.log_path.read_text(errors="replace"), numbers)
    rows = stack.client().scan(TableName=table)["Items"]
    assert len(rows) == 4 and not _holding_card_numbers(json.dumps(rows), numbers)
    cases = stack.client().scan(TableName=pipeline.cases_table)["Items"]
    assert len(cases) >= 4 and not _holding_card_numbers(json.dumps(cases), numbers)
    archived = _archived_rows(archive)
    assert not _holding_card_numbers(json.dumps(archived, default=str), numbers)
    for row in archived:
        if row.get("original_b64"):
            original = base64.b64decode(row["original_b64"])
            assert not _holding_card_numbers(readings(original), numbers)
    assert {r["txn_id"] for r in archived if "txn_id" in r} >= {
        p.txn_id for p in [*digit_token, *txn_keyed]
    }
    pipeline.drop_tables()


def test_poison_rule_records_do_not_freeze_the_rules_and_zero_rules_is_ready(
    stack: LocalStack, tmp_path: Path
) -> None:
    deployment = Pipeline(stack, tmp_path)
    deployment.create_topics()  # no rules at all: a fresh deployment
    deployment.extra_env.update(
        {"FRAUD_API_TOKEN": TOKEN, "FRAUD_WEB_BIND": "0.0.0.0", "FRAUD_MAX_RULES": "3"}
    )
    first = deployment.worker("first").start()
    try:
        wait_until(lambda: http(first, "GET", "/readyz")[0] == 200, 30, "ready with no rule")
        nested = b"[" * 6000 + b"]" * 6000  # 12 KB, deeper than Python's json can go
        huge = json.dumps({**SEED_RULE.to_json(), "description": "x" * 720_000}).encode()
        run(
            publish(
                stack.bootstrap,
                deployment.rules,
                [("deep", nested), ("huge", huge), ("high-value-burst", SEED_RULE.to_bytes())],
            )
        )
        wait_until(
            lambda: (
                [r["rule_id"] for r in http(first, "GET", "/rules")[1]["rules"]]
                == ["high-value-burst"]
            ),
            10,
            "the good rule applied behind the poison",
        )
        # Faust's own unauthenticated views are off, whatever the bind address.
        assert http(first, "GET", "/router/")[0] == 404
        assert http(first, "GET", "/table/card-state/")[0] == 404
        # Rule bodies the API refuses, with the reason.
        status, body = http(first, "PUT", "/rules/deep", nested)
        assert status == 400 and "nested" in body["error"]
        status, body = http(first, "PUT", "/rules/huge", huge)
        assert status == 413 and "FRAUD_MAX_RULE_BYTES" in body["error"]
        for n in (2, 3):
            rule = {**SEED_RULE.to_json(), "rule_id": f"extra-{n}"}
            status, _ = http(first, "PUT", f"/rules/extra-{n}", json.dumps(rule).encode())
            assert status == 202
        wait_until(lambda: len(http(first, "GET", "/rules")[1]["rules"]) == 3, 10, "3 rules")
        rule = {**SEED_RULE.to_json(), "rule_id": "extra-4"}
        status, body = http(first, "PUT", "/rules/extra-4", json.dumps(rule).encode())
        assert status == 409 and "FRAUD_MAX_RULES" in body["error"]
        assert http(first, "GET", "/healthz")[0] == 200
    finally:
        first.stop()

    # A worker started after the poison reads past it, is ready and detects.
    second = deployment.worker("second").start()
    try:
        wait_until(lambda: http(second, "GET", "/readyz")[0] == 200, 30, "second ready")
        cards = burst("tok_rules", "rules", now_ms())
        run(
            produce(
                stack.bootstrap, deployment.payments, [(b"tok_rules", p.to_json()) for p in cards]
            )
        )
        alerts = alerts_on(deployment, 3, idle_s=2.0, timeout_s=120.0)
    finally:
        second.stop()
    # The seed rule and its two copies each alert once on the burst.
    assert sorted(a.rule_id for a in alerts) == ["extra-2", "extra-3", "high-value-burst"]


def test_the_rules_cli_refuses_a_rule_past_the_limits(pipeline: Pipeline, tmp_path: Path) -> None:
    second = tmp_path / "second.json"
    second.write_text(json.dumps({**SEED_RULE.to_json(), "rule_id": "second"}))
    big = tmp_path / "big.json"
    big.write_text(json.dumps({**SEED_RULE.to_json(), "description": "x" * 480}))

    def put(path: Path, **limits: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(FAUST), "-A", "app", "rules", "put", str(path)],
            cwd=REPO,
            env={**pipeline.env("cli", free_port()), **limits},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    too_many = put(second, FRAUD_MAX_RULES="1")  # the seed rule is in force already
    assert_one_error_line(too_many, 1, "rule refused", "FRAUD_MAX_RULES")
    too_big = put(big, FRAUD_MAX_RULE_BYTES="300")
    assert_one_error_line(too_big, 1, "rule refused", SEED_RULE.rule_id, "FRAUD_MAX_RULE_BYTES")
    fits = put(second, FRAUD_MAX_RULES="2")
    assert fits.returncode == 0, fits.stderr


def test_a_payment_dated_ahead_cannot_blind_its_card_and_a_reused_txn_id_is_no_duplicate(
    pipeline: Pipeline,
) -> None:
    # One payment 23 h ahead, then an honest burst on the same card: before the clock
    # bound, the burst went to the DLQ as late and never alerted.
    now = now_ms()
    ahead = payment("tok_blind", "ahead-1", now + 23 * 3600 * 1000)
    honest = burst("tok_blind", "honest", now - 5_000)
    # Three payments sharing one txn_id with other amounts: two of them are no
    # redelivery. And a true redelivery (same content) of the first.
    reused = [
        payment("tok_reuse", "same-id", now - 3_000 + i, amount=a)
        for i, a in enumerate(("1500", "1600", "1700"))
    ]
    records = [(p.card_id.encode(), p.to_json()) for p in [ahead, *honest, *reused, reused[0]]]
    worker = pipeline.worker("clock").start()
    try:
        run(produce(pipeline.stack.bootstrap, pipeline.payments, records))
        alerts = alerts_on(pipeline, 1, idle_s=2.0, timeout_s=120.0)
        letters = dead_letters(pipeline, 3)
    finally:
        worker.stop()
    assert [(a.group_key, a.txn_ids) for a in alerts] == [
        ("tok_blind", tuple(p.txn_id for p in honest))
    ]
    reasons = Counter(letter["reason"] for letter in letters)
    assert reasons == {"ts_in_future": 1, "conflicting_txn_id": 2}
    conflict = next(letter for letter in letters if letter["reason"] == "conflicting_txn_id")
    assert reused[0].fingerprint() in conflict["detail"]
    assert "same-id" in conflict["detail"]

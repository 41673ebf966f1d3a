"""Chaos (slow, `make test-slow`): the broker dies mid-stream and comes back."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from app.models import Alert
from app.rules import SEED_RULE
from tests.integration.harness import Pipeline, keyed, produce, read_all, run
from tests.integration.test_pipeline import generated_stream
from tests.oracle import oracle

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_broker_restart_mid_stream_loses_no_alert(pipeline: Pipeline) -> None:
    payments, _ = generated_stream(6000, seed=23, start_ms=int(time.time() * 1000) - 600_000)
    expected = oracle(payments, SEED_RULE)
    worker = pipeline.worker().start()
    failures: list[BaseException] = []

    def send() -> None:
        try:
            run(produce(pipeline.stack.bootstrap, pipeline.payments, keyed(payments), rate=500))
        except BaseException as exc:  # surfaced by the assertion below
            failures.append(exc)

    producer = threading.Thread(target=send)
    producer.start()
    try:
        time.sleep(4)
        pipeline.stack.kill_kafka()
        time.sleep(5)
        pipeline.stack.restart_kafka()
        producer.join(180)
        records = run(
            read_all(
                pipeline.stack.bootstrap,
                pipeline.alerts,
                pipeline.partitions,
                until=len(expected),
                idle_s=5.0,
                timeout_s=240.0,
            )
        )
        assert worker.process is not None and worker.process.poll() is None, "worker survived"
    finally:
        producer.join(60)
        worker.stop()
    assert failures == [], f"the producer gave up: {failures}"
    alerts = [Alert.from_json(r.value) for r in records]
    assert {(a.group_key, a.txn_ids) for a in alerts} == expected
    repeated = [i for i, n in Counter(a.alert_id for a in alerts).items() if n > 1]
    # A broker restart may make Faust replay its last commit interval from the changelog
    # and re-emit (never lose) an alert: same id, written once by the sink.
    assert len(repeated) <= len(expected) // 10

"""A running worker's stores forget the keys its changelogs forget (tables.sweep)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import rocksdict

from app.detection.keys import card_partition
from app.detection.rules import SEED_RULE
from tables import STATE_RETENTION_MS
from tests import factories
from tests.integration.harness import Pipeline, alerts_on, keyed, produce, read_all, run, wait_until
from tests.integration.test_web import http

IDLE, RECENT = "tok_sweep_idle", "tok_sweep_recent"


def state_db(pipeline: Pipeline, card: str) -> Path:
    """The worker's RocksDB of card-state holding ``card``'s partition."""
    partition = card_partition(card, pipeline.partitions)
    found = list((pipeline.tmp / "data-w1").rglob(f"*card-state-{partition}.db"))
    assert len(found) == 1, found
    return found[0]


def test_a_key_not_written_for_the_retention_is_forgotten_and_the_others_kept(
    pipeline: Pipeline,
) -> None:
    pipeline.extra_env["FRAUD_STATE_SWEEP_INTERVAL"] = "1"
    now = int(time.time() * 1000)
    first = [
        factories.payment(card, f"{card}-{n}", "1500", now - 60_000 + n * 1000)
        for card in (IDLE, RECENT)
        for n in range(2)
    ]
    worker = pipeline.worker().start()
    try:
        run(produce(pipeline.stack.bootstrap, pipeline.payments, keyed(first)))
        wait_until(lambda: worker.stats()["processed"] == 4, 60, "four payments decided")
        for card in (IDLE, RECENT):
            assert (
                len(http(worker, f"/cards/{card}")[1]["rules"][SEED_RULE.rule_id]["pending"]) == 2
            )
    finally:
        worker.stop()

    # The idle card's state was last written longer ago than the changelog keeps it.
    path = state_db(pipeline, IDLE)
    db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))
    try:
        key = json.dumps(IDLE).encode()
        stored = db[key]
        assert isinstance(stored, bytes)
        state = json.loads(stored)
        state["w"] = now - STATE_RETENTION_MS - 3_600_000
        db[key] = json.dumps(state).encode()
    finally:
        db.close()

    worker = pipeline.worker().start()
    try:
        wait_until(lambda: worker.stats()["state_keys_swept"] == 1, 60, "the idle key swept")
        # Forgotten: no rule holds anything for it (its high-value windows stay, by their
        # own expiry).
        assert http(worker, f"/cards/{IDLE}")[1]["rules"] == {}
        assert len(http(worker, f"/cards/{RECENT}")[1]["rules"][SEED_RULE.rule_id]["pending"]) == 2
        # A third high-value payment alerts on the card that kept its state, and only there.
        third = [factories.payment(card, f"{card}-2", "1500", now) for card in (IDLE, RECENT)]
        run(produce(pipeline.stack.bootstrap, pipeline.payments, keyed(third)))
        wait_until(lambda: worker.stats()["processed"] == 2, 60, "both decided")
        alerts = alerts_on(pipeline, expected=1)
        assert [a.group_key for a in alerts] == [RECENT]
        time.sleep(2)  # a few more sweeps: nothing else is old enough
        assert worker.stats()["state_keys_swept"] == 1
    finally:
        worker.stop()

    # The changelog forgets it too: a tombstone between the idle card's first state and the
    # one its third payment started afresh.
    changelog = f"fraud-{pipeline.uid}-card-state-changelog"
    records = run(read_all(pipeline.stack.bootstrap, changelog, pipeline.partitions))
    idle = [r.value for r in records if r.key == json.dumps(IDLE).encode()]
    assert idle.count(None) == 1 and idle[-1] is not None, idle
    assert idle.index(None) > 0
    assert json.loads(idle[-1])["r"][SEED_RULE.rule_id]["p"][0][1] == f"{IDLE}-2"

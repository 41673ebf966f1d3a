"""The ``worker`` fixture: fresh counters and a runtime where this worker owns every card."""

from __future__ import annotations

import pytest

from app.detection.rules import SEED_RULE
from app.web import cluster
from app.web.consumer import ConsumerWatch
from app.worker.failures import Failures
from app.worker.stats import WorkerStats
from tests.unit.web.fakes import fake_rulebook, loaded_listbook, patch_web


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> WorkerStats:
    """A fresh WorkerStats and a runtime where this worker owns every card."""
    fresh = WorkerStats()
    patch_web(monkeypatch, "stats", fresh)
    patch_web(monkeypatch, "consumer_lag", lambda app, broker=None: [])
    patch_web(monkeypatch, "watch", ConsumerWatch())
    patch_web(monkeypatch, "locate_card", lambda card: cluster.CardOwner(2, cluster.my_url(), True))
    patch_web(monkeypatch, "owns_partition", lambda partition: True)
    patch_web(monkeypatch, "tables_recovered", lambda: True)
    patch_web(monkeypatch, "rulebook", fake_rulebook([SEED_RULE]))
    patch_web(monkeypatch, "listbook", loaded_listbook())
    patch_web(monkeypatch, "sink_snapshot", lambda: None)
    patch_web(monkeypatch, "failures", Failures())
    return fresh

"""The archive's process (``agents.archive_child``) beside its worker, on real Kafka.

It archives for the worker, dies with it (also when the worker is SIGKILLed), is restarted
after its own death without losing a row (``/healthz`` says the archive is failing while it
is down), archives what it holds when the worker alone is asked to stop, and does not exist
when the archive is off.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from bench.pipeline import descendants
from tests.integration.harness import Pipeline, Worker, http, keyed, produce, run, wait_until
from tests.integration.test_history import archived, archiving, wait_for_rows
from tests.integration.test_pipeline import generated_stream

pytestmark = pytest.mark.integration


def archive_children(worker: Worker) -> list[int]:
    """The pids of the worker's live archive processes."""
    assert worker.process is not None
    found = []
    for pid in descendants(worker.process.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:  # ended meanwhile
            continue
        if not gone(pid) and b"agents.archive_child" in cmdline:
            found.append(pid)
    return found


def the_archive_child(worker: Worker) -> int:
    wait_until(lambda: len(archive_children(worker)) == 1, 30, "the worker's archive process")
    (pid,) = archive_children(worker)
    return pid


def gone(pid: int) -> bool:
    """Ended: no such process, or a zombie (dead, not yet reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def health(worker: Worker) -> Any:
    """The archive's part of ``/healthz`` (None when the archive is off)."""
    _, body = http("GET", f"http://127.0.0.1:{worker.web_port}/healthz")
    return body["archive"]


def test_a_sigkilled_worker_leaves_no_archive_process(pipeline: Pipeline) -> None:
    root = archiving(pipeline)
    payments, _ = generated_stream(500, seed=61)
    worker = pipeline.worker().start()
    try:
        child = the_archive_child(worker)
        run(produce(pipeline.stack.bootstrap, pipeline.payments, keyed(payments)))
        wait_for_rows(root, "payments", "txn_id", len(payments))
        assert worker.process is not None
        os.kill(worker.process.pid, signal.SIGKILL)  # the worker alone, not its group
        worker.process.wait(10)
        wait_until(lambda: gone(child), 10, f"archive process {child} gone with its worker")
    finally:
        worker.stop()
    assert len(archived(root, "payments", "txn_id")) == len(payments)


def test_a_dead_archive_process_is_restarted_and_loses_no_row(pipeline: Pipeline) -> None:
    root = archiving(pipeline)
    payments, _ = generated_stream(2000, seed=67)
    worker = pipeline.worker().start()
    failing: list[float | None] = []
    try:
        first = the_archive_child(worker)
        run(produce(pipeline.stack.bootstrap, pipeline.payments, keyed(payments[:1000])))
        wait_for_rows(root, "payments", "txn_id", 1000)
        wait_until(lambda: int(health(worker)["rows"]) >= 1000, 10, "the rows counted")
        assert health(worker)["failing_s"] is None
        os.kill(first, signal.SIGKILL)

        def seen_failing() -> bool:
            failing.append(health(worker)["failing_s"])
            return failing[-1] is not None

        wait_until(seen_failing, 20, "/healthz showing the archive failing", interval=0.1)
        run(produce(pipeline.stack.bootstrap, pipeline.payments, keyed(payments[1000:])))
        wait_for_rows(root, "payments", "txn_id", len(payments))
        wait_until(lambda: health(worker)["failing_s"] is None, 30, "the archive back")
        second = the_archive_child(worker)
        time.sleep(3)  # a replay that wrote a second copy would show up by now
        txn_ids = archived(root, "payments", "txn_id")
        rows = health(worker)["rows"]
    finally:
        worker.stop()
    assert second != first
    assert sorted(txn_ids) == sorted(p.txn_id for p in payments), "each payment once"
    assert isinstance(rows, int) and rows >= len(payments), "the counts go on across restarts"
    assert f"archive: process {first} exited (signal SIGKILL)" in worker.log_text()
    assert "ERROR" in next(
        line for line in worker.log_text().splitlines() if f"process {first} exited" in line
    )


def test_a_worker_asked_to_stop_has_its_archive_process_roll_what_it_holds(
    pipeline: Pipeline,
) -> None:
    root = archiving(pipeline)
    # No roll but the final one: the rows reach the files only if the worker asks its
    # archive process to stop and waits for it.
    pipeline.extra_env["FRAUD_ARCHIVE_ROLL_SECONDS"] = "3600"
    payments, _ = generated_stream(1000, seed=71)
    worker = pipeline.worker().start()
    try:
        child = the_archive_child(worker)
        run(produce(pipeline.stack.bootstrap, pipeline.payments, keyed(payments)))
        wait_until(lambda: worker.stats()["processed"] >= len(payments), 60, "payments decided")
        time.sleep(5)  # the archive's consumer has read them too (it waits 1 s per fetch)
        assert archived(root, "payments", "txn_id") == []
        assert worker.process is not None
        os.kill(worker.process.pid, signal.SIGTERM)  # the worker alone, not its group
        worker.process.wait(60)
    finally:
        worker.stop()
    assert gone(child)
    assert sorted(archived(root, "payments", "txn_id")) == sorted(p.txn_id for p in payments)
    assert "rows not archived at stop" not in worker.log_text()


def test_no_archive_process_when_the_archive_is_off(pipeline: Pipeline) -> None:
    # The harness's default: FRAUD_ARCHIVE_ENABLED=false.
    worker = pipeline.worker().start()
    try:
        time.sleep(3)  # the worker's tasks have started by now
        children = archive_children(worker)
        status = health(worker)
    finally:
        worker.stop()
    assert children == []
    assert status is None

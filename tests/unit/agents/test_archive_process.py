"""The archive's process and its supervision by the worker (``agents.archive``'s
``archive_child_session``, ``agents.archive_child``): what ``/healthz`` shows of it, its log
lines as the worker's, its death, its stop. Real child processes; Kafka's part is in
``tests/integration/test_archive_process.py``."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from agents import archive, archive_child
from agents.archive import ArchiveProcessDied, ChildProgress, archive_child_session, exit_reason
from agents.archive_child import Pipe, ToWorker
from app.web.health import archive_status
from app.worker import collector
from app.worker.faust_app import settings
from app.worker.stats import stats

REPO = Path(__file__).resolve().parents[3]
# The worker's (mode's), and where a record was logged, for a handler whose format asks.
FORMAT = "[%(asctime)s] [%(process)s] [%(levelname)s]: %(message)s (%(module)s:%(lineno)d)"


@pytest.fixture(autouse=True)
def archive_counters(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    assert settings.archive_enabled  # as shipped
    monkeypatch.setattr(stats, "archived_rows", 0)
    monkeypatch.setattr(stats, "archived_files", 0)
    monkeypatch.setattr(stats, "archive_failing_since", None)
    yield
    archive.child_retry.recovered()


def report(rows: int, files: int, failing_s: float | None, turns: int) -> dict[str, object]:
    return {"rows": rows, "files": files, "failing_s": failing_s, "turns": turns}


def test_health_shows_the_archive_process_counts_across_restarts_and_its_failing() -> None:
    first = ChildProgress(pid=101)
    first.take(report(1000, 4, None, 7))
    first.take(report(1500, 6, None, 9))
    # Restarted: the new process counts from zero, the worker's counts go on.
    second = ChildProgress(pid=102)
    second.take(report(0, 0, None, 0))
    second.take(report(200, 2, None, 3))
    assert archive_status() == {"failing_s": None, "rows": 1700, "files": 8}

    second.take(report(200, 2, 12.0, 3))  # its consumer fails (Kafka or S3 down)
    assert failing_s() >= 12.0  # type: ignore[operator]
    # A process that starts after a death says nothing yet: still failing until it archives.
    third = ChildProgress(pid=103)
    third.take(report(0, 0, None, 0))
    assert failing_s() is not None
    third.take(report(0, 0, None, 1))
    assert failing_s() is None


def failing_s() -> float | None:
    status = archive_status()
    assert status is not None
    failing: float | None = status["failing_s"]
    return failing


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(FORMAT))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_a_log_record_of_the_child_is_written_by_the_worker_as_its_own() -> None:
    out = io.BytesIO()
    child_side = ToWorker(Pipe(out))
    try:
        raise ConnectionError("broker down")
    except ConnectionError:
        record = logging.LogRecord(
            "agents.archive", logging.ERROR, __file__, 17, "archive failed: %s", ("x",), None
        )
        record.exc_info = sys.exc_info()
    expected = Lines().format(record).replace(f"[{os.getpid()}]", "[4242]")
    child_side.emit(record)

    worker_logger = logging.getLogger("agents.archive")
    written = Lines()
    worker_logger.addHandler(written)
    try:
        ChildProgress(pid=4242).log(json.loads(out.getvalue())["log"])
        debug = logging.LogRecord("agents.archive", logging.DEBUG, "", 1, "chatter", (), None)
        out.seek(0), out.truncate()
        child_side.emit(debug)
        worker_logger.setLevel(logging.INFO)
        ChildProgress(pid=4242).log(json.loads(out.getvalue())["log"])
    finally:
        worker_logger.removeHandler(written)
        worker_logger.setLevel(logging.NOTSET)
    assert written.lines == [expected], "same line, the child's pid; DEBUG below the level"
    assert "ConnectionError: broker down" in written.lines[0]


def test_a_long_message_is_cut_so_a_line_stays_bounded() -> None:
    out = io.BytesIO()
    text = "\U0001f4b3" * 10**6  # the most bytes JSON escapes a character to
    record = logging.LogRecord("x", logging.ERROR, "", 1, "%s", (text,), None)
    record.exc_text = text
    ToWorker(Pipe(out)).emit(record)
    assert len(out.getvalue()) < archive.CHILD_LINE_BYTES


def child(script: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(script)]


def test_a_dead_archive_process_is_an_error_named_by_its_exit() -> None:
    line = json.dumps({"progress": report(30, 1, None, 2)})
    command = child(f"print({line!r}, flush=True); raise SystemExit(3)")
    with pytest.raises(ArchiveProcessDied, match="exit code 3"):
        asyncio.run(archive_child_session(command))
    assert (stats.archived_rows, stats.archived_files) == (30, 1), "its last report counted"
    assert exit_reason(-9) == "signal SIGKILL"


def test_a_stopping_worker_kills_an_archive_process_that_does_not_stop(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(archive, "CHILD_STOP_S", 1.0)
    pid_file = tmp_path / "pid"
    command = child(
        f"""
        import os, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        time.sleep(60)
        """
    )

    async def stop_while_it_runs() -> None:
        session = asyncio.create_task(archive_child_session(command))
        while not pid_file.exists() or not pid_file.read_text():  # noqa: ASYNC110 (a file)
            await asyncio.sleep(0.05)
        session.cancel()
        with pytest.raises(asyncio.CancelledError):
            await session

    asyncio.run(stop_while_it_runs())
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.parametrize("parent_is_right", [True, False])
def test_the_archive_process_goes_at_once_if_its_parent_went_before_it_could_ask(
    parent_is_right: bool,
) -> None:
    parent = "os.getppid()" if parent_is_right else "os.getppid() + 1"
    done = subprocess.run(
        child(
            f"""
            import os
            from agents.archive_child import die_with
            die_with({parent})
            print("still here")
            """
        ),
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stdout.strip()) == (
        (0, "still here") if parent_is_right else (-signal.SIGKILL, "")
    )


def test_a_card_number_in_an_archive_failure_is_masked_in_the_worker_log_too() -> None:
    # The child's archive loop logs its failures with the redacted traceback (Retry); the
    # worker writes the forwarded record as it is, so the mask holds in the worker's log.
    out = io.BytesIO()
    child_side = ToWorker(Pipe(out))
    archive.log.addHandler(child_side)
    failed: list[bool] = []

    async def fails_once() -> None:
        if not failed:
            failed.append(True)
            raise ValueError("bad record for card 4111 1111 1111 1111")

    try:
        asyncio.run(archive.archive_retry.run(fails_once))
    finally:
        archive.log.removeHandler(child_side)
        archive.archive_retry.recovered()
    written = Lines()
    archive.log.addHandler(written)
    try:
        for line in out.getvalue().splitlines():
            ChildProgress(pid=4242).log(json.loads(line)["log"])
    finally:
        archive.log.removeHandler(written)
    assert len(written.lines) == 1 and "archive failed, nothing is lost" in written.lines[0]
    assert "ValueError: bad record for card" in written.lines[0]
    assert "4111 1111 1111 1111" not in written.lines[0]


def test_the_archive_process_tunes_its_collector_and_arrows_allocator() -> None:
    # Each costs the archive's loop: CPython's young threshold of 700 made every fetch of
    # 2 000 records a few collections, and Arrow's jemalloc gave each roll's pages back to
    # the kernel for the next roll to fault in again (bench.archive_cost: 0.47-0.60 CPU-s
    # per 100k before, 0.41-0.43 after).
    thresholds, pool = gc.get_threshold(), pa.default_memory_pool()
    try:
        archive_child.tune_process()
        assert gc.get_threshold()[0] == collector.YOUNG_THRESHOLD
        assert pa.default_memory_pool().backend_name == "system"
    finally:
        gc.set_threshold(*thresholds)
        pa.set_memory_pool(pool)

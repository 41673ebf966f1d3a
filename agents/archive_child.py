"""The archive's process: ``python -m agents.archive_child PARENT_PID LOG_LEVEL``.

Started and supervised by the worker (``agents.archive.archive_topics``), with the worker's
environment, so the same settings. It runs the archive's loop as the worker once did on its
own event loop (``archive_session`` under ``archive_retry``: the group ``<app id>-archive``,
the files as the source of truth, the resume) and speaks to the worker in JSON lines on its
standard output, the only thing written there:

* ``{"progress": {"rows": …, "files": …, "failing_s": …, "turns": …}}`` when its counters
  changed, at most every ``REPORT_S``: what ``/healthz`` shows of the archive;
* ``{"log": {"name": …, "level": …, "msg": …, "exc": …, "created": …}}`` for each log
  record, which the worker hands to its own handlers (format, destination, level).

It never outlives the worker: ``PR_SET_PDEATHSIG`` has the kernel SIGKILL it when the
worker's thread that spawned it ends (nothing is lost: its group's offsets stay where its
last file was written), and a check of its parent's pid covers the moments before that was
set and a system without ``prctl``. SIGTERM (the worker's clean stop) and SIGINT (a
terminal's Ctrl-C, sent to the whole process group) cancel the loop, which rolls what it
holds into files first (``_final_roll``), as a stopping worker did.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import IO, Any

from agents.archive import archive_retry, archive_session
from app.history.files import use_system_memory_pool
from app.worker import collector
from app.worker.stats import stats

# Seconds between two looks at the counters (and at the parent's pid).
REPORT_S = 0.5
# A log message and its traceback are cut to these many characters (the tail of a traceback
# names the error): a line stays below the worker's limit (CHILD_LINE_BYTES) whatever they hold.
MESSAGE_CHARS = 8000
EXC_CHARS = 16000
PR_SET_PDEATHSIG = 1  # linux/prctl.h
PLAIN = logging.Formatter()  # a traceback as the worker's handlers print one


def die_with(parent: int) -> None:
    """SIGKILL this process when ``parent`` goes; exit now if it already went."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    # Checked after the prctl: a parent that died before it would never signal.
    exit_if_orphaned(parent)


def exit_if_orphaned(parent: int) -> None:
    """SIGKILL itself, as the kernel would have (no final roll: nothing is lost), if
    ``parent`` went."""
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


class Pipe:
    """The worker's end: one JSON line per message, whole, from any thread. A write blocks
    only while the pipe's kernel buffer is full, that is while the worker does not read it:
    the archive then waits for the worker rather than hold lines in memory."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        with self.lock:
            self.out.write(line)
            self.out.flush()


class ToWorker(logging.Handler):
    """Each record, formatted as its message and traceback only: the worker's handlers
    format the rest as they do the worker's own records."""

    def __init__(self, pipe: Pipe) -> None:
        super().__init__()
        self.pipe = pipe

    def emit(self, record: logging.LogRecord) -> None:
        try:
            exc = None
            if record.exc_info:
                exc = PLAIN.formatException(record.exc_info)[-EXC_CHARS:]
            elif record.exc_text:
                exc = record.exc_text[-EXC_CHARS:]
            entry = {
                "name": record.name,
                "level": record.levelno,
                "msg": record.getMessage()[:MESSAGE_CHARS],
                "exc": exc,
                "created": record.created,
                # Where it was logged, for a handler whose format asks.
                "pathname": record.pathname,
                "lineno": record.lineno,
                "funcName": record.funcName,
            }
            self.pipe.send({"log": entry})
        except Exception:
            self.handleError(record)


def progress() -> dict[str, Any]:
    since = stats.archive_failing_since
    return {
        "rows": stats.archived_rows,
        "files": stats.archived_files,
        "failing_s": None if since is None else round(time.monotonic() - since, 1),
        "turns": stats.archive_turns,
    }


async def report(pipe: Pipe, parent: int) -> None:
    """The counters to the worker when they changed; and a look at the parent's pid."""
    sent: dict[str, Any] | None = None
    while True:
        now = progress()
        # failing_s grows each look: sent when the state changes, not every second.
        state = {**now, "failing_s": now["failing_s"] is not None}
        if state != sent:
            pipe.send({"progress": now})
            sent = state
        exit_if_orphaned(parent)
        await asyncio.sleep(REPORT_S)


async def run(pipe: Pipe, parent: int) -> None:
    """The archive's loop until SIGTERM or SIGINT (then its final roll), reporting meanwhile."""
    loop = asyncio.get_running_loop()
    work = asyncio.create_task(archive_retry.run(archive_session))
    stopping = asyncio.Event()

    def stop() -> None:
        # Once: a second cancel would interrupt the final roll (shielded, but awaited).
        if not stopping.is_set():
            stopping.set()
            work.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    reporter = asyncio.create_task(report(pipe, parent))
    try:
        await work
    except asyncio.CancelledError:
        if not stopping.is_set():
            raise
    finally:
        reporter.cancel()
        pipe.send({"progress": progress()})  # the final roll's rows


def tune_process() -> None:
    """What the archive's loop costs depends on two process-wide settings: the collector's
    young threshold, as the worker's (``app.worker.collector``: a fetch of 2 000 records
    otherwise sets off collections), and Arrow's allocator (``use_system_memory_pool``: the
    rolls' pages otherwise go back to the kernel and fault in again). ``bench.archive_loop``
    calls it too, so the benchmark measures what runs."""
    collector.tune()
    use_system_memory_pool()


def main(argv: list[str]) -> None:
    parent, level = int(argv[0]), int(argv[1])
    die_with(parent)
    tune_process()
    # The protocol owns standard output; anything else printed goes to standard error.
    pipe = Pipe(os.fdopen(os.dup(1), "wb"))
    os.dup2(2, 1)
    root = logging.getLogger()
    root.handlers[:] = [ToWorker(pipe)]
    root.setLevel(level)
    asyncio.run(run(pipe, parent))


if __name__ == "__main__":
    main(sys.argv[1:])

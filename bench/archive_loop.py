"""The archive's loop alone, for ``bench.archive_cost``: ``python -m bench.archive_loop N``
runs ``agents.archive``'s consumer on the topics the environment names (``FRAUD_*``) until it
has read N records and written them to Parquet, then prints its CPU seconds as JSON."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds

from agents.archive import Archiver, archive_consumer, archive_once
from agents.archive_child import tune_process
from app.history.evidence import open_archive
from app.worker.faust_app import settings
from app.worker.stats import stats


def _threads() -> dict[str, tuple[float, int]]:
    """This process's CPU seconds and page faults so far, by thread: ``main``, the event
    loop's (the consumer's fetches and records), and ``rolls``, every other thread's
    (``asyncio.to_thread``'s, which read and write the rolls)."""
    found: dict[str, tuple[float, int]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        fields = stat.rsplit(")", 1)[1].split()  # from the state on: man 5 proc, less 2
        name = "main" if task.name == str(os.getpid()) else "rolls"
        cpu, faults = found.get(name, (0.0, 0))
        found[name] = cpu + (int(fields[11]) + int(fields[12])) / tick, faults + int(fields[7])
    return found


async def _archive_until(expect: int) -> dict[str, Any]:
    """In the child: run the archive's loop until ``expect`` records are read and archived."""
    consumer = archive_consumer()
    archiver = Archiver(open_archive(settings), consumer)
    cpu, wall, threads = time.process_time(), time.perf_counter(), _threads()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    await consumer.start()
    try:
        consumer.subscribe(list(archiver.kinds), listener=archiver)
        wakeups = 0
        while True:
            await archive_once(archiver)
            wakeups += 1
            assigned = consumer.assignment()
            if not assigned or any(tp not in archiver.covered for tp in assigned):
                continue
            read = 0
            for tp in assigned:
                read += await consumer.position(tp)
            if read >= expect:
                break
        async with archiver.busy:
            await archiver.roll_due(everything=True)
    finally:
        await consumer.stop()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    used = resource.getrusage(resource.RUSAGE_SELF)
    spent = {
        name: (
            round(cpu - threads.get(name, (0.0, 0))[0], 2),
            faults - threads.get(name, (0.0, 0))[1],
        )
        for name, (cpu, faults) in _threads().items()
    }
    root = Path(settings.archive_url) / "payments"
    rows = ds.dataset(root, format="parquet").count_rows() if root.exists() else 0
    return {
        "records": expect,
        "rows": rows,
        "files": stats.archived_files,
        "loop_turns": wakeups,
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "cpu_s_per_100k": round(cpu / expect * 100_000, 3),
        # CPU seconds and page faults of the event loop's thread (the consumer: fetches,
        # records) and of the rolls' threads.
        "threads": spent,
        "system_cpu_s": round(used.ru_stime - usage.ru_stime, 3),
        "page_faults": used.ru_minflt - usage.ru_minflt,
    }


def child(expect: int) -> None:
    tune_process()  # as the archive's process does
    print(json.dumps(asyncio.run(_archive_until(expect))), flush=True)


if __name__ == "__main__":
    child(int(sys.argv[1]))

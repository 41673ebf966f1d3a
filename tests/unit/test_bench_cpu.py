"""bench.pipeline counts a worker's CPU with its archive process's: a worker's CPU seconds per
100 000 payments are its process tree's, a child that ended (a restarted archive process)
included."""

from __future__ import annotations

import os
import subprocess
import sys

from bench.pipeline import cpu_seconds, thread_cpu_seconds, tree_cpu_seconds

# A child that spends half a CPU second, says so, then waits to be ended.
BURN = """
import sys, time
started = time.process_time()
while time.process_time() - started < 0.5:
    pass
print("burnt", flush=True)
sys.stdin.read()
"""


def children_cpu() -> float:
    me = os.getpid()
    return tree_cpu_seconds(me) - cpu_seconds(me)


def test_a_process_cpu_includes_its_children_live_and_ended() -> None:
    before = children_cpu()
    child = subprocess.Popen(
        [sys.executable, "-c", BURN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "burnt\n"
        live = children_cpu()
        threads = thread_cpu_seconds(os.getpid())
    finally:
        child.communicate("")
    ended = children_cpu()
    assert live - before >= 0.45, "a live child's CPU"
    assert ended - before >= 0.45, "an ended child's CPU (reaped: its parent's cutime)"
    assert f"child-{child.pid}/main" in threads

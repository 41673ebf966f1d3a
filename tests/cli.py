"""Running ``faust -A app ...`` as a subprocess and checking that a failure is one line."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FAUST = Path(sys.executable).parent / "faust"


def free_port() -> int:
    """A loopback port nothing listens on (at the time of asking)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_cli(args: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FAUST), "-A", "app", *args],
        cwd=REPO,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_error_line(
    result: subprocess.CompletedProcess[str],
    exit_code: int,
    *names: str,
    prefix: str = "Error: ",
) -> str:
    """``result`` exited ``exit_code`` with exactly one non-empty line on stderr, starting
    with ``prefix`` and naming each of ``names``, nothing on stdout and no traceback;
    returns that line."""
    shown = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stdout + result.stderr, shown
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, shown
    assert result.stdout == "", shown
    assert result.returncode == exit_code, shown
    (line,) = lines
    assert line.startswith(prefix), shown
    for name in names:
        assert name in line, f"{name!r} not named: {line}"
    return line

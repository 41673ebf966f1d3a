"""The engine is usable without Faust: importing it wires nothing and reads no setting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_engine_imports_without_faust_or_settings() -> None:
    probe = (
        "import os, sys; os.environ['FRAUD_PARTITIONS'] = 'not-a-number';"
        "import app.detection.engine, app.detection.models;"
        "import app.detection.rules, app.detection.validation;"
        "assert 'faust' not in sys.modules, 'faust imported';"
        "assert 'app.worker.faust_app' not in sys.modules, 'the app was built'"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_faust_finds_the_wired_app_through_the_package() -> None:
    probe = (
        "from faust.cli.base import find_app; app = find_app('app');"
        "assert {a.name for a in app.agents.values()} >= {'detect', 'detect-grouped'};"
        "assert 'card-state' in app.tables; print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr

"""The newcomer journeys of docs/quickstart.md, docs/tutorials/first-rule.md and
docs/how-to/produce-payments.md, run as the docs spell them (tests/journeys.py) against a
running demo.

The demo is ``python -m infra.local.demo --no-generator`` with an env file, an archive
(rolling every 2 s) and a web port of its own, so a demo a developer runs is left alone.
Every command runs in bash after ``source``-ing that env file, where the docs say
``source .cache/demo.env``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bench.pipeline import descendants as process_tree
from tests import journeys
from tests.integration.harness import free_port, wait_until
from tests.journeys import REPO

pytestmark = pytest.mark.integration

CARD = "tok_3f9a2c7be41d08e5"  # examples/payment.json's
SENT = r"sent txn_demo_0001_\w{8} to payments\.raw partition \d offset 0\n"
EVIDENCE = re.compile(r"shadow since \S+: (\d+) live alerts, (\d+) in a backtest of the same (\d+)")


def identity(pid: int) -> tuple[int, str] | None:
    """pid and start time (a pid alone may be recycled); None once gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] == "Z" else (pid, fields[19])


def descendants(root: int) -> list[tuple[int, str]]:
    """Every live process under ``root``, children of children included."""
    return [ident for pid in process_tree(root) if (ident := identity(pid))]


class Demo:
    """``python -m infra.local.demo`` in its own session, its output collected line by line."""

    def __init__(self, tmp: Path) -> None:
        self.env_file = tmp / "demo.env"
        # The developer's own exports (a sourced demo.env, say) must not reach the demo.
        self.environ = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("FRAUD_") and k != "SLACK_WEBHOOK_URL"
        }
        env = {
            **self.environ,
            "FRAUD_ARCHIVE_URL": str(tmp / "archive"),
            "FRAUD_ARCHIVE_ROLL_SECONDS": "2",
        }
        argv = [sys.executable, "-m", "infra.local.demo", "--no-generator"]
        argv += ["--web-port", str(free_port()), "--env-file", str(self.env_file)]
        self.process = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float) -> str:
        """The first line of output matching ``pattern``, waiting for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if re.search(pattern, line):
                    return line
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"no {pattern!r} from the demo:\n{self.output()}")

    def sh(self, command: str) -> subprocess.CompletedProcess[str]:
        """``command`` as a second terminal runs it, after sourcing the demo's env file."""
        script = f"source {shlex.quote(str(self.env_file))} && {command}"
        return subprocess.run(
            ["bash", "-c", script],
            cwd=REPO,
            env=self.environ,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def ok(self, command: str) -> str:
        done = self.sh(command)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def stop(self) -> int:
        """Ctrl-C, as a terminal would send it; the demo's exit code."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGINT)
        return self.process.wait(60)

    def end(self) -> None:
        """Stop the demo if a failed check left it running: Ctrl-C, then SIGKILL (its
        children die with it)."""
        try:
            self.stop()
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def get_json(url: str, token: str | None = None) -> Any:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def put_like_the_curl_line(web_url: str, token: str) -> str:
    """What the tutorial's curl line sends, for a machine without curl."""
    request = urllib.request.Request(
        f"{web_url}/rules/gb-pair/",
        data=(REPO / "examples" / "rules" / "first-rule.json").read_bytes(),
        method="PUT",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202
        return str(response.read().decode())


def rule_version(web_url: str) -> int | None:
    """The version of gb-pair the worker holds (it reads the rules topic back)."""
    rules = get_json(f"{web_url}/rules/")["rules"]
    return next((r["version"] for r in rules if r["rule_id"] == "gb-pair"), None)


def exports_of(lines: list[str]) -> dict[str, str]:
    return {
        name.removeprefix("export "): shlex.split(value)[0]
        for name, value in (line.split("=", 1) for line in lines if line.startswith("export "))
    }


def test_the_documented_journeys_run_against_the_demo(tmp_path: Path) -> None:
    if not (REPO / ".venv" / "bin" / "faust").exists():
        pytest.skip("the docs' commands call .venv/bin/faust; make venv makes it")
    demo = Demo(tmp_path)
    try:
        # Terminal 1: make demo, until the worker is ready.
        started = demo.wait_for(r"^demo: starting .*\(logs in .+\)$", 30)
        logs = Path(started.split("(logs in ", 1)[1].removesuffix(")"))
        demo.wait_for(r"^demo: worker ready in \d+ s: dashboard http", 90)
        printed = [line for line in demo.lines if line.startswith("export ")]
        exports = exports_of(printed)
        assert list(exports) == [
            "FRAUD_BROKER",
            "FRAUD_API_TOKEN",
            "DEMO_WEB_URL",
            "FRAUD_ARCHIVE_URL",
        ]
        assert exports["FRAUD_BROKER"].startswith("kafka://127.0.0.1:")
        assert exports["FRAUD_ARCHIVE_URL"] == str(tmp_path / "archive")
        in_file = demo.env_file.read_text().splitlines()
        assert [line for line in in_file if not line.startswith("#")] == printed
        assert demo.env_file.stat().st_mode & 0o777 == 0o600
        web, token = exports["DEMO_WEB_URL"], exports["FRAUD_API_TOKEN"]

        # Quickstart, terminal 2: the rules, then one payment of your own.
        listed = demo.ok(journeys.RULES_LIST)
        for rule_id in ("high-value-burst", "card-testing", "device-many-cards"):
            assert f"{rule_id}\tv1\tactive" in listed
        sent = demo.ok(journeys.PRODUCE_PAYMENT)
        assert re.fullmatch(SENT, sent), sent
        wait_until(lambda: get_json(f"{web}/stats/")["processed"] == 1, 30, "the payment decided")
        assert json.loads(demo.ok(journeys.STATS))["dlq_total"] == 0

        # First rule: put it in shadow with the CLI, then again as JSON over HTTP.
        assert demo.ok(journeys.RULES_PUT) == "published gb-pair v1 (shadow)\n"
        wait_until(lambda: rule_version(web) == 1, 30, "the worker holding gb-pair v1")
        if shutil.which("curl"):
            answer = demo.ok(journeys.CURL_PUT)
        else:
            answer = put_like_the_curl_line(web, token)
        assert json.loads(answer).get("published", {}).get("version") == 2, answer
        assert "gb-pair\tv2\tshadow\t" in demo.ok(journeys.RULES_LIST)
        wait_until(lambda: rule_version(web) == 2, 30, "the worker holding gb-pair v2")

        # Two more payments: gb-pair fires in shadow, high-value-burst (three) for real.
        demo.ok(journeys.PRODUCE_PAYMENT)
        demo.ok(journeys.PRODUCE_PAYMENT)
        demo.wait_for(rf"^ALERT gb-pair v2 \[low\] \(shadow\) card_id={CARD} ", 30)
        demo.wait_for(rf"^ALERT high-value-burst v1 \[high\] card_id={CARD} ", 30)
        demo.wait_for(r"slack #fraud-demo \[HIGH\] high-value-burst v1", 30)

        # Its evidence: the live alert beside a backtest of the two payments since v2.
        def evidence() -> tuple[int, ...] | None:
            found = EVIDENCE.search(demo.ok(journeys.RULES_SHOW))
            return None if found is None else tuple(int(n) for n in found.groups())

        wait_until(lambda: evidence() == (1, 1, 2), 40, "the evidence of gb-pair v2", 1.0)

        # The backtest of the YAML on today's archive: the three payments, one pair.
        def backtest() -> dict[str, Any] | None:
            done = demo.sh(journeys.BACKTEST)
            return json.loads(done.stdout) if done.returncode == 0 else None

        wait_until(
            lambda: (backtest() or {}).get("payments_replayed") == 3,
            40,
            "the three payments archived",
            1.0,
        )
        report = backtest()
        assert report is not None
        assert (report["rule_id"], report["alerts"]) == ("gb-pair", 1)
        demo.ok(journeys.BREAK_RULE)
        refused = demo.sh(journeys.BACKTEST_BROKEN)
        assert refused.returncode == 1
        assert refused.stderr == (
            "Error: rule refused: window: must be a number of seconds in (0, 604800]\n"
        )

        # A bad payment goes to the DLQ with its reason.
        demo.ok(journeys.BAD_PAYMENT)
        demo.ok(journeys.PRODUCE_BAD_PAYMENT)
        wait_until(
            lambda: demo.ok(journeys.DLQ_COUNTS) == "{'unknown_country': 1}\n",
            30,
            "the bad payment dead-lettered",
        )

        # Activate it: its alerts are notified now.
        assert demo.ok(journeys.RULES_ACTIVATE) == "published gb-pair v3 (active)\n"
        wait_until(lambda: rule_version(web) == 3, 30, "the worker holding gb-pair v3")
        demo.ok(journeys.PRODUCE_PAYMENT)
        demo.ok(journeys.PRODUCE_PAYMENT)
        demo.wait_for(r"slack #fraud-demo \[LOW\] gb-pair v3", 30)
        notified = [line for line in demo.lines if "slack #fraud-demo" in line]
        assert not [line for line in notified if "gb-pair v2" in line]  # shadow: nobody told

        # The dashboard.
        with urllib.request.urlopen(f"{web}/", timeout=10) as response:
            assert response.headers.get_content_type() == "text/html"

        # The token is the terminal's and the env file's, in no log.
        for path in logs.rglob("*"):
            if path.is_file():
                assert token.encode() not in path.read_bytes(), path
        assert "AWS_" not in "\n".join(printed)

        # Ctrl-C: everything stops, nothing is left, the env file is gone.
        running = descendants(demo.process.pid)
        assert len(running) >= 6  # Kafka, DynamoDB, worker, notifier, Slack receiver, buttons
        assert demo.stop() == 0, demo.output()
        assert demo.lines[-2:] == ["demo: stopping", "demo: stopped"]
        assert not demo.env_file.exists()
        assert [ident for ident in running if identity(ident[0]) == ident] == []
        shutil.rmtree(logs)  # kept when a check fails: the output names it
    finally:
        demo.end()

"""``make demo``: the whole pipeline on this machine, printing alerts as they arrive.

Starts real Kafka and DynamoDB Local (see infra.local.stack), creates the topics and
the alerts table, publishes the default rules and one of each kind (and the list the list
rule reads), then a worker (detection, the DynamoDB sink and the Parquet archive), the
notifier (a stream poller invoking the Lambda handler, as Lambda's event source mapping
would), a local Slack receiver and the Slack buttons' handler on loopback (unless
SLACK_WEBHOOK_URL points at a real one), the payment generator (unless
``--no-generator``), a stand-in analyst that closes cases and imports chargebacks by the
generator's truth (infra.local.analyst; unless ``--no-analyst``) and an alert printer.

Once the stack is up it prints what a second terminal needs, as ``export`` lines: the
broker, this session's API token, the worker's web URL, the archive, and the topics when
they are not the defaults. It writes the same lines to ``.cache/demo.env`` (``--env-file``;
mode 0600, removed when the demo stops), so ``source .cache/demo.env`` there is enough
(docs/quickstart.md). The token is made for the session and given to the worker (and the
Slack buttons' handler, which closes cases with it) only, so rule writes, backtests and
evidence over HTTP work; it is printed and written to that file, nowhere else.

Ctrl-C stops everything; no process is left behind (the children die with the demo even
when it is killed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from app.detection.rules import Rule
from app.generator import BLOCKED_DEVICES, PaymentGenerator, backfill, ring_entries
from app.rules_admin.topic import load_rule_file, publish
from app.worker.settings import Settings, SettingsError, load_settings
from infra.local.slack_actions import local_slack
from infra.local.stack import (
    SIGNALS,
    LocalStack,
    StackError,
    Stopped,
    default_topics,
    signals_exit,
    spawn_child,
)

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DEFAULT_RULES = REPO / "app" / "rules_admin" / "default_rules.yaml"
# One rule of each kind (shadow), which the generator's --patterns fire.
KINDS_RULES = REPO / "examples" / "rules" / "kinds.yaml"
# A rule that reads a list (the demo lists the generator's ring devices on it).
LISTS_RULES = REPO / "examples" / "rules" / "lists.yaml"

# The backlog sent before live traffic (--backfill): this many payments per second of event
# time, from a generator of its own seed (its txn ids are not the live generator's, seed 1).
BACKFILL_RATE = 5.0
BACKFILL_SEED = 2

IDEMPOTENCY_TABLE = "fraud_notifier_idempotency"
# The worker's default archive directory, made absolute for the messages and the exports.
ARCHIVE = REPO / ".cache" / "archive"
ENV_FILE = REPO / ".cache" / "demo.env"
DEFAULT_WEB_PORT = 6066
# Archive files roll this often in the demo, so they show up while it runs (a worker's
# default is 5 minutes); FRAUD_ARCHIVE_ROLL_SECONDS in the environment wins.
ARCHIVE_ROLL_S = "30"
# The FRAUD_TOPIC_* variables and their settings: exported when not the defaults.
TOPICS = (
    ("TOPIC_PAYMENTS", "topic_payments"),
    ("TOPIC_ALERTS", "topic_alerts"),
    ("TOPIC_DLQ", "topic_dlq"),
    ("TOPIC_RULES", "topic_rules"),
    ("TOPIC_LABELS", "topic_labels"),
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def web_port(requested: int | None) -> int:
    """The worker's web port: ``requested``, else 6066 when it is free, else any free one."""
    if requested is not None:
        return requested
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
        try:
            sock.bind(("127.0.0.1", DEFAULT_WEB_PORT))
        except OSError:
            return _free_port()
    return DEFAULT_WEB_PORT


def shown(path: Path) -> str:
    """``path`` as one would type it here: relative when under the current directory."""
    absolute = Path(os.path.abspath(path))  # not resolved: .venv/bin/python is a symlink
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def archive_location(environ: Mapping[str, str]) -> str:
    """Where the demo's worker archives: FRAUD_ARCHIVE_URL, a path made absolute (the
    worker runs in the repository), or ``.cache/archive`` in the repository."""
    url = environ.get("FRAUD_ARCHIVE_URL") or str(ARCHIVE)
    if "://" in url:
        return url
    return str((REPO / url).resolve())


def set_archive_aside(archive: Path) -> Path | None:
    """Move the last session's archive to ``<archive>.previous`` (replacing an older one);
    returns where it went, or None when there was nothing to move. A new broker numbers
    its offsets from 0 again, and the archive takes its files for what it already holds
    (app/history/resume.py): the new session's payments would be skipped."""
    if not archive.is_dir() or not any(archive.iterdir()):
        return None
    previous = archive.with_name(archive.name + ".previous")
    shutil.rmtree(previous, ignore_errors=True)
    archive.rename(previous)
    return previous


def session_exports(
    settings: Settings, broker: str, token: str, web_url: str, archive: str
) -> dict[str, str]:
    """What a second terminal needs to reach this demo, in the order printed: the CLI
    (broker, topics), HTTP (token, web URL) and backtests (archive)."""
    exports = {"FRAUD_BROKER": broker}
    defaults = Settings()
    for name, attr in TOPICS:
        value = getattr(settings, attr)
        if value != getattr(defaults, attr):
            exports[f"FRAUD_{name}"] = value
    exports["FRAUD_API_TOKEN"] = token
    exports["DEMO_WEB_URL"] = web_url
    exports["FRAUD_ARCHIVE_URL"] = archive
    return exports


def export_lines(exports: Mapping[str, str]) -> list[str]:
    return [f"export {name}={shlex.quote(value)}" for name, value in exports.items()]


def env_file_text(lines: list[str], pid: int, path: str) -> str:
    header = (
        f"# Written by `make demo` (infra/local/demo.py, pid {pid}) for its session; removed\n"
        f"# when it stops. In another terminal: source {path}\n"
        "# FRAUD_API_TOKEN is this session's local token; DEMO_WEB_URL is the worker's web\n"
        "# server, for curl and the browser (the worker itself reads FRAUD_WEB_PORT).\n"
    )
    return header + "\n".join(lines) + "\n"


def write_env_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole (a reader never sees half of it), readable by its
    owner only: it holds the session's token."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(scratch, path)


def remove_env_file(path: Path, text: str) -> None:
    """Remove ``path`` if it still holds ``text`` (another demo may have replaced it)."""
    with contextlib.suppress(OSError):
        if path.read_text(encoding="utf-8") == text:
            path.unlink()


def answers_ok(url: str) -> bool:
    """Whether ``url`` answers 200 (a worker's /readyz/ once it is ready)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, ValueError):  # URLError and HTTPError (503 until ready) are OSErrors
        return False


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def render(alert: dict[str, object]) -> str:
    latency = time.time() * 1000 - float(str(alert["trigger_produced_at_ms"]))
    amounts = ", ".join(str(a) for a in alert["amounts"])  # type: ignore[attr-defined]
    return (
        f"ALERT {alert['rule_id']} v{alert['rule_version']} [{alert['severity']}]"
        f"{' (shadow)' if alert['status'] == 'shadow' else ''} "
        f"{alert['group_by']}={alert['group_key']} amounts=[{amounts}] "
        f"{alert['first_event_ts']} .. {alert['last_event_ts']} latency={latency:.0f} ms"
        + "".join(f" {name}={value}" for name, value in _explanation(alert).items())
    )


def _explanation(alert: dict[str, object]) -> dict[str, object]:
    """What explains an alert of a kind other than an aggregate rule (distance, speed...)."""
    explanation = alert.get("explanation")
    return explanation if isinstance(explanation, dict) else {}


def demo_rules() -> list[Rule]:
    """What the demo publishes: the default rules, one rule of each kind, and a list rule."""
    return load_rule_file(DEFAULT_RULES) + load_rule_file(KINDS_RULES) + load_rule_file(LISTS_RULES)


async def print_alerts(bootstrap: str, topic: str, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="latest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=250)
            for messages in batch.values():
                for message in messages:
                    print(render(json.loads(message.value)), flush=True)
    finally:
        await consumer.stop()


class Demo:
    """One ``make demo`` session: the stack, the children, the exports and their file."""

    def __init__(self, args: argparse.Namespace, settings: Settings) -> None:
        self.args = args
        self.settings = settings
        self.stack = LocalStack(partitions=args.partitions)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs = Path(tempfile.mkdtemp(prefix="fraud-demo-"))
        self.env_file: Path = args.env_file
        self.env_text: str | None = None
        self.slack_notifier_env: dict[str, str] = {}

    def _spawn(
        self, name: str, argv: list[str], env: Mapping[str, str], inherit: bool = False
    ) -> subprocess.Popen[bytes]:
        """A child in its own process group, dying with the demo; ``inherit`` lets it print
        to the demo's terminal, otherwise it writes ``<name>.log`` in the logs directory."""
        with contextlib.ExitStack() as files:
            log = None if inherit else files.enter_context((self.logs / f"{name}.log").open("wb"))
            process = spawn_child(
                argv,
                cwd=REPO,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=None if inherit else subprocess.STDOUT,
            )
        self.processes.append(process)
        return process

    def run(self) -> int:
        settings = self.settings
        print(f"demo: starting Kafka and DynamoDB Local (logs in {self.logs})", flush=True)
        if os.environ.get("FRAUD_BROKER"):
            print(
                f"demo: FRAUD_BROKER is set ({os.environ['FRAUD_BROKER']}): using that broker,"
                " not starting one (unset it for a broker of the demo's own)",
                flush=True,
            )
        self.stack.start()
        self.stack.provision(
            topics=default_topics(
                self.args.partitions,
                payments=settings.topic_payments,
                alerts=settings.topic_alerts,
                dlq=settings.topic_dlq,
                rules=settings.topic_rules,
                labels=settings.topic_labels,
            ),
            table=settings.dynamodb_table,
            cases_table=settings.cases_table,
        )
        rules = demo_rules()
        asyncio.run(
            publish(
                self.stack.bootstrap,
                settings.topic_rules,
                [(r.rule_id, r.to_bytes()) for r in rules],
            )
        )
        print(f"demo: published {len(rules)} rules: {', '.join(r.rule_id for r in rules)}")
        # The list the blocked-device rule reads: the devices the generator's ring uses.
        ring = ring_entries(int(time.time() * 1000))
        asyncio.run(
            publish(
                self.stack.bootstrap,
                settings.topic_lists,
                [(e.record_key, e.to_bytes()) for e in ring],
            )
        )
        print(f"demo: listed {len(ring)} devices of a takeover ring on {BLOCKED_DEVICES}")

        port = web_port(self.args.web_port)
        web_url = f"http://127.0.0.1:{port}"
        archive = archive_location(os.environ)
        if not os.environ.get("FRAUD_BROKER") and not os.environ.get("FRAUD_ARCHIVE_URL"):
            moved = set_archive_aside(ARCHIVE)
            if moved is not None:
                print(
                    f"demo: the last session's archive is now {shown(moved)}: this broker's"
                    " offsets start again at 0, and its files would hide the new payments",
                    flush=True,
                )
        token = secrets.token_urlsafe(24)
        env = {
            **os.environ,
            **self.stack.env(),
            "FRAUD_PARTITIONS": str(self.args.partitions),
            "FRAUD_WEB_PORT": str(port),
            "FRAUD_DATADIR": str(self.logs / "worker-data"),
            "FRAUD_ARCHIVE_URL": archive,
            "FRAUD_ARCHIVE_ROLL_SECONDS": os.environ.get("FRAUD_ARCHIVE_ROLL_SECONDS")
            or ARCHIVE_ROLL_S,
        }
        env.pop("FRAUD_API_TOKEN", None)  # the worker (and the Slack buttons) get the session's
        faust, python = str(BIN / "faust"), str(BIN / "python")
        started = time.monotonic()
        worker = self._spawn(
            "worker",
            [faust, "-A", "app", "worker", "-l", "info"],
            {**env, "FRAUD_API_TOKEN": token},
        )

        lines = export_lines(
            session_exports(settings, self.stack.broker_url, token, web_url, archive)
        )
        self.env_text = env_file_text(lines, os.getpid(), shown(self.env_file))
        write_env_file(self.env_file, self.env_text)
        cli = shown(BIN / "faust")
        today = datetime.now(UTC).date()
        # One write, so no child's output lands inside the block of exports.
        print(
            "\n".join(
                [
                    f"demo: in a second terminal: source {shown(self.env_file)}"
                    " (removed when the demo stops), or paste:",
                    *lines,
                    f"demo: then e.g. {cli} -A app rules list;"
                    f" {shown(BIN / 'python')} examples/produce_payment.py (docs/quickstart.md)",
                    "demo: payments, alerts, dead letters and labels are archived as Parquet"
                    f" in {archive}"
                    f" every {env['FRAUD_ARCHIVE_ROLL_SECONDS']} s; backtest a rule on them:"
                    f" {cli} -A app rules backtest examples/rules/first-rule.yaml"
                    f" --since {today} --until {today + timedelta(days=1)}",
                ]
            ),
            flush=True,
        )

        self._start_notifier(env, web_url, python, token)
        if self.args.no_generator:
            print(
                "demo: no generator: the payments are the ones you send. Ctrl-C stops.",
                flush=True,
            )
        else:
            generate = [
                faust,
                "-A",
                "app",
                "generate",
                "--rate",
                str(self.args.rate),
                "--duration",
                "86400",
                "--fraud-ratio",
                str(self.args.fraud_ratio),
                "--patterns",
                str(self.args.patterns),
            ]
            backfilled = None
            if not self.args.no_analyst:
                truth, backfilled = self._start_analyst(env, web_url, token, python)
                generate += ["--truth", str(truth)]
            self._backfill(backfilled)
            self._spawn("generator", generate, env)
            print(f"demo: generating {self.args.rate:g} payments/s. Ctrl-C stops.", flush=True)
        return asyncio.run(self._watch(worker, web_url, started))

    def _backfill(self, truth: Path | None) -> None:
        """Send the last ``--backfill`` seconds of event time before live traffic (its truth
        to ``truth``), so every kind has fired within minutes of the start:
        an absence alerts 30 minutes and the lateness after its payment, impossible travel
        and a card's usual spending take minutes."""
        seconds = self.args.backfill
        if seconds <= 0:
            return
        generator = PaymentGenerator(
            seed=BACKFILL_SEED, fraud_ratio=self.args.fraud_ratio, pattern_ratio=self.args.patterns
        )
        with contextlib.ExitStack() as files:
            out = None if truth is None else files.enter_context(truth.open("w", encoding="utf-8"))
            asyncio.run(
                backfill(
                    self.stack.bootstrap,
                    self.settings.topic_payments,
                    generator,
                    seconds,
                    BACKFILL_RATE,
                    out,
                    log=lambda text: print(f"demo: {text}", flush=True),
                )
            )

    def _start_analyst(
        self, env: Mapping[str, str], web_url: str, token: str, python: str
    ) -> tuple[Path, Path]:
        """The stand-in analyst (infra.local.analyst), following the generator's truth and
        the backfill's; returns the truth files' paths (the live generator's, the
        backfill's)."""
        truth, backfilled = self.logs / "truth.jsonl", self.logs / "truth-backfill.jsonl"
        truth.touch()
        analyst = [
            python, "-m", "infra.local.analyst", "--truth", str(truth), "--truth", str(backfilled),
            "--web", web_url, "--out", str(self.logs / "chargebacks"),
        ]  # fmt: skip
        self._spawn("analyst", analyst, {**env, "FRAUD_API_TOKEN": token})
        print(
            "demo: a stand-in analyst closes each case after a few seconds by the generator's"
            " truth, and imports the fraud no case caught as chargebacks after two minutes"
            f" ({self.logs / 'analyst.log'}); rules' precision and recall: the dashboard's"
            f" outcomes, or {shown(BIN / 'faust')} -A app rules show ID",
            flush=True,
        )
        return truth, backfilled

    def _start_notifier(
        self, env: Mapping[str, str], web_url: str, python: str, token: str
    ) -> None:
        webhook = os.environ.get("SLACK_WEBHOOK_URL")
        slack = {"SLACK_WEBHOOK_URL": webhook or ""}
        if not webhook:
            port = _free_port()
            receiver = [python, "-m", "infra.local.slack_receiver", "--port", str(port)]
            self._spawn("slack-receiver", receiver, env, inherit=True)
            self._start_slack_actions(env, f"http://127.0.0.1:{port}", web_url, python, token)
            slack = self.slack_notifier_env
        notifier_env = {
            **env,
            **slack,
            "IDEMPOTENCY_TABLE": IDEMPOTENCY_TABLE,
            "FRAUD_INSPECT_BASE_URL": web_url,
        }
        poller = [
            python,
            "-m",
            "infra.local.stream_poller",
            "--endpoint",
            self.stack.dynamodb_endpoint,
            "--table",
            self.settings.dynamodb_table,
            "--create-idempotency-table",
            "--log-level",
            "WARNING",
        ]
        self._spawn("notifier", poller, notifier_env)

    def _start_slack_actions(
        self, env: Mapping[str, str], receiver: str, web_url: str, python: str, token: str
    ) -> None:
        """The Slack buttons' handler on loopback (infra/local/slack_actions.py); its
        signing secret, made for the session, in a 0600 file of the logs directory."""
        self.slack_notifier_env, actions_env = local_slack(
            receiver, web_url, token, self.settings.cases_table, IDEMPOTENCY_TABLE
        )
        port = _free_port()
        secret_file = self.logs / "slack-signing-secret"
        write_env_file(secret_file, actions_env["SLACK_SIGNING_SECRET"] + "\n")
        server = [python, "-m", "infra.local.slack_actions", "--port", str(port)]
        self._spawn("slack-actions", server, {**env, **actions_env})
        print(
            f"demo: Slack buttons answered on http://127.0.0.1:{port}/ (requests signed with"
            f" the secret in {secret_file}; docs/how-to/slack.md)",
            flush=True,
        )

    async def _watch(self, worker: subprocess.Popen[bytes], web_url: str, started: float) -> int:
        """Print alerts until a signal (0) or the worker's exit (1); say when it is ready."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
        for sig in SIGNALS:
            loop.add_signal_handler(sig, stop.set)
        alerts = asyncio.create_task(
            print_alerts(self.stack.bootstrap, self.settings.topic_alerts, stop)
        )
        try:
            ready = False
            while not stop.is_set():
                code = worker.poll()
                if code is not None:
                    print(
                        f"demo: the worker exited with code {code}; see {self.logs / 'worker.log'}",
                        file=sys.stderr,
                        flush=True,
                    )
                    return 1
                if not ready and await asyncio.to_thread(answers_ok, f"{web_url}/readyz/"):
                    ready = True
                    print(
                        f"demo: worker ready in {time.monotonic() - started:.0f} s:"
                        f" dashboard {web_url}/",
                        flush=True,
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
            return 0
        finally:
            stop.set()
            await alerts
            for sig, handler in previous.items():
                loop.remove_signal_handler(sig)
                signal.signal(sig, handler)

    def close(self) -> None:
        if self.env_text is not None:
            remove_env_file(self.env_file, self.env_text)
        _stop(self.processes)
        self.stack.stop()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rate", type=float, default=200.0, help="payments per second")
    parser.add_argument("--fraud-ratio", type=float, default=0.005, help="share starting a burst")
    parser.add_argument(
        "--patterns",
        type=float,
        default=0.001,
        help="share starting each injected pattern (card testing then cash-out, a new device,"
        " impossible travel, ...): the example kinds' rules catch them, the default rules miss"
        " them, and chargebacks then reveal what no rule caught",
    )
    parser.add_argument(
        "--backfill",
        type=float,
        default=3600.0,
        help="before live traffic, send this many seconds of past event time (5 payments per"
        " second of it, the same fraud and patterns), so every kind fires within minutes: an"
        " absence alerts only once its card's partition is 30 minutes past it (0: none)",
    )
    parser.add_argument(
        "--no-generator",
        action="store_true",
        help="start no generator: the only payments are yours (examples/produce_payment.py)",
    )
    parser.add_argument(
        "--no-analyst",
        action="store_true",
        help="no stand-in analyst: cases stay open until you close them, no chargebacks",
    )
    parser.add_argument("--partitions", type=int, default=4, help="partitions per topic")
    parser.add_argument(
        "--web-port", type=int, default=None, help="the worker's web port (6066, or a free one)"
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        default=ENV_FILE,
        help="where to write the export lines (.cache/demo.env)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"demo: bad setting: {exc}", file=sys.stderr)
        return 2
    demo = Demo(args, settings)
    code = 0
    try:
        with signals_exit():
            code = demo.run()
    except Stopped:
        pass
    except StackError as exc:
        print(f"demo: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        # A second Ctrl-C must not cut the stop short; it is bounded (20 s, then SIGKILL).
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in SIGNALS}
        try:
            print("demo: stopping", flush=True)
            demo.close()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    print("demo: stopped", flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())

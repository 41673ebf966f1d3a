"""``make demo``: the whole pipeline on this machine, printing alerts as they arrive.

Starts real Kafka and DynamoDB Local (see infra.local.stack), creates the topics and
the alerts table, publishes the default rules, then a worker (detection and the
DynamoDB sink), the notifier (a stream poller invoking the Lambda handler, as Lambda's
event source mapping would), a local Slack receiver (unless SLACK_WEBHOOK_URL points
at a real one), the payment generator and an alert printer. Ctrl-C stops everything;
no process is left behind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from aiokafka import AIOKafkaConsumer

from app.rules_admin.topic import load_rule_file, publish
from infra.local.stack import LocalStack

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DEFAULT_RULES = REPO / "app" / "rules_admin" / "default_rules.yaml"
# The worker's default archive directory, made absolute for the messages.
ARCHIVE = REPO / ".cache" / "archive"


def _spawn(
    argv: list[str], env: dict[str, str], log: IO[bytes] | None, inherit: bool = False
) -> subprocess.Popen[bytes]:
    """A child in its own process group; ``inherit`` lets it print to the demo's terminal."""
    return subprocess.Popen(
        argv,
        cwd=REPO,
        env=env,
        stdout=None if inherit else (log or subprocess.DEVNULL),
        stderr=None if inherit else subprocess.STDOUT,
        start_new_session=True,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
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
    )


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local.demo", description=__doc__)
    parser.add_argument("--rate", type=float, default=200.0, help="payments per second")
    parser.add_argument("--fraud-ratio", type=float, default=0.005, help="share starting a burst")
    parser.add_argument("--partitions", type=int, default=4, help="partitions per topic")
    parser.add_argument("--web-port", type=int, default=6066, help="the worker's web port")
    args = parser.parse_args(argv)

    logs = Path(tempfile.mkdtemp(prefix="fraud-demo-"))
    print(f"demo: starting Kafka and DynamoDB Local (logs in {logs})", flush=True)
    processes: list[subprocess.Popen[bytes]] = []
    with LocalStack(partitions=args.partitions) as stack:
        stack.provision()
        rules = load_rule_file(DEFAULT_RULES)
        asyncio.run(
            publish(stack.bootstrap, "fraud.rules", [(r.rule_id, r.to_bytes()) for r in rules])
        )
        print(f"demo: published {len(rules)} default rules: {', '.join(r.rule_id for r in rules)}")
        env = {
            **os.environ,
            **stack.env(),
            "FRAUD_PARTITIONS": str(args.partitions),
            "FRAUD_WEB_PORT": str(args.web_port),
            "FRAUD_DATADIR": str(logs / "worker-data"),
            # The archive's default place; files roll every 30 s so they show up while
            # the demo runs (a worker's default is 5 minutes).
            "FRAUD_ARCHIVE_URL": str(ARCHIVE),
            "FRAUD_ARCHIVE_ROLL_SECONDS": "30",
        }
        faust = str(BIN / "faust")
        python = str(BIN / "python")
        try:
            webhook = os.environ.get("SLACK_WEBHOOK_URL")
            if not webhook:
                port = _free_port()
                processes.append(
                    _spawn(
                        [python, "-m", "infra.local.slack_receiver", "--port", str(port)],
                        env,
                        None,
                        inherit=True,
                    )
                )
                webhook = f"http://127.0.0.1:{port}/services/demo"
            notifier_env = {
                **env,
                "SLACK_WEBHOOK_URL": webhook,
                "IDEMPOTENCY_TABLE": "fraud_notifier_idempotency",
                "FRAUD_INSPECT_BASE_URL": f"http://127.0.0.1:{args.web_port}",
            }
            poller = [
                python,
                "-m",
                "infra.local.stream_poller",
                "--endpoint",
                stack.dynamodb_endpoint,
                "--table",
                "fraud_alerts",
                "--create-idempotency-table",
                "--log-level",
                "WARNING",
            ]
            with (logs / "notifier.log").open("wb") as notifier_log:
                processes.append(_spawn(poller, notifier_env, notifier_log))
            with (logs / "worker.log").open("wb") as worker_log:
                processes.append(
                    _spawn([faust, "-A", "app", "worker", "-l", "info"], env, worker_log)
                )
            print(
                f"demo: worker starting (web on http://127.0.0.1:{args.web_port}/stats/);"
                f" generating {args.rate:g} payments/s. Ctrl-C stops.",
                flush=True,
            )
            today = datetime.now(UTC).date()
            print(
                f"demo: payments, alerts and dead letters are archived as Parquet in {ARCHIVE}/"
                " every 30 s; backtest a rule on them with FRAUD_ARCHIVE_URL set the same:"
                " faust -A app rules backtest bench/seed_only.yaml"
                f" --since {today} --until {today + timedelta(days=1)}",
                flush=True,
            )
            generate = [
                faust,
                "-A",
                "app",
                "generate",
                "--rate",
                str(args.rate),
                "--duration",
                "86400",
                "--fraud-ratio",
                str(args.fraud_ratio),
            ]
            with (logs / "generator.log").open("wb") as generator_log:
                processes.append(_spawn(generate, env, generator_log))
            stop = asyncio.Event()
            loop = asyncio.new_event_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            loop.run_until_complete(print_alerts(stack.bootstrap, "fraud.alerts", stop))
            loop.close()
        finally:
            print("demo: stopping", flush=True)
            _stop(processes)
    print("demo: stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

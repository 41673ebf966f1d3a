"""The stream poller against moto's DynamoDB Streams, and the local Slack receiver.

Includes the whole local path: table write -> stream -> poller -> real handler ->
receiver, and the two command lines run as the demo runs them (subprocesses).
"""

from __future__ import annotations

import io
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import boto3
import pytest

from infra.local.slack_receiver import SlackReceiver
from infra.local.stream_poller import StreamPoller
from lambdas.notifier.adapters.idempotency import ensure_table
from lambdas.notifier.handlers import notify as notifier
from tests.factories import alert_row

pytestmark = pytest.mark.integration

REGION = "us-east-1"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def aws_env(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for name in list(os.environ):
        if name.startswith(("SLACK_", "SNS_", "IDEMPOTENCY_", "FRAUD_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    return moto_url


@dataclass
class AlertsTable:
    name: str
    stream_arn: str
    client: Any
    streams: Any

    def put(self, alert_id: str, *, status: str = "active", card: str = "tok_1") -> None:
        self.client.put_item(
            TableName=self.name,
            Item=alert_row(alert_id, status=status, card=card),
            ConditionExpression="attribute_not_exists(alert_id)",
        )

    def poller(self, handler: Callable[[dict[str, Any], Any], Any], **kwargs: Any) -> StreamPoller:
        return StreamPoller(
            streams_client=self.streams,
            stream_arn=self.stream_arn,
            handler=handler,
            region=REGION,
            retry_backoff_s=0.01,
            **kwargs,
        )


@pytest.fixture
def table(aws_env: str) -> AlertsTable:
    client = boto3.client("dynamodb", region_name=REGION, endpoint_url=aws_env)
    name = f"fraud_alerts_{uuid.uuid4().hex[:8]}"
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "alert_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "alert_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    )
    arn = client.describe_table(TableName=name)["Table"]["LatestStreamArn"]
    streams = boto3.client("dynamodbstreams", region_name=REGION, endpoint_url=aws_env)
    return AlertsTable(name, arn, client, streams)


class Recorder:
    """A handler that records each event and fails the records ``fail`` picks."""

    def __init__(self, fail: Callable[[dict[str, Any], int], bool] | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self._fail = fail

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        assert context.get_remaining_time_in_millis() > 0
        self.events.append(event)
        call = len(self.events)
        failures = [
            {"itemIdentifier": r["dynamodb"]["SequenceNumber"]}
            for r in event["Records"]
            if self._fail is not None and self._fail(r, call)
        ]
        return {"batchItemFailures": failures}

    def alert_ids(self, call: int) -> list[str]:
        return [r["dynamodb"]["Keys"]["alert_id"]["S"] for r in self.events[call]["Records"]]


def test_poller_hands_lambda_shaped_records_to_the_handler(table: AlertsTable) -> None:
    table.put("al-1")
    table.put("al-2", status="shadow")
    table.client.update_item(
        TableName=table.name,
        Key={"alert_id": {"S": "al-1"}},
        UpdateExpression="SET severity = :s",
        ExpressionAttributeValues={":s": {"S": "critical"}},
    )
    table.client.delete_item(TableName=table.name, Key={"alert_id": {"S": "al-2"}})
    recorder = Recorder()
    poller = table.poller(recorder)

    assert poller.poll_once() == 4

    (evt,) = recorder.events
    json.dumps(evt)  # plain JSON, as Lambda delivers it
    records = evt["Records"]
    assert [r["eventName"] for r in records] == ["INSERT", "INSERT", "MODIFY", "REMOVE"]
    for rec in records:
        assert set(rec) >= {
            "eventID",
            "eventName",
            "eventVersion",
            "eventSource",
            "awsRegion",
            "dynamodb",
            "eventSourceARN",
        }
        assert rec["eventSource"] == "aws:dynamodb"
        assert rec["eventSourceARN"] == table.stream_arn
        assert isinstance(rec["dynamodb"]["ApproximateCreationDateTime"], int)
        assert rec["dynamodb"]["SequenceNumber"]
    assert records[0]["dynamodb"]["NewImage"]["amounts"]["L"][0] == {"S": "1000.00"}
    sequence_numbers = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
    assert sequence_numbers == sorted(sequence_numbers)

    # Delivered records are not delivered again; new ones are.
    assert poller.poll_once() == 0
    table.put("al-3")
    assert poller.poll_once() == 1
    assert recorder.alert_ids(1) == ["al-3"]


def test_batch_size_caps_each_invocation(table: AlertsTable) -> None:
    for i in range(5):
        table.put(f"al-{i}")
    recorder = Recorder()
    poller = table.poller(recorder, batch_size=2)

    while poller.poll_once():
        pass

    assert [len(e["Records"]) for e in recorder.events] == [2, 2, 1]


def test_partial_failure_is_retried_from_the_first_failed_record(table: AlertsTable) -> None:
    for i in range(1, 5):
        table.put(f"al-{i}")

    def fail_al2_once(record: dict[str, Any], call: int) -> bool:
        return call == 1 and record["dynamodb"]["Keys"]["alert_id"]["S"] == "al-2"

    recorder = Recorder(fail_al2_once)
    poller = table.poller(recorder)

    assert poller.poll_once() == 4
    assert recorder.alert_ids(0) == ["al-1", "al-2", "al-3", "al-4"]
    assert recorder.alert_ids(1) == ["al-2", "al-3", "al-4"]
    assert len(recorder.events) == 2
    assert poller.skipped == []


def test_a_record_that_keeps_failing_is_skipped_after_max_retries(table: AlertsTable) -> None:
    for i in range(1, 4):
        table.put(f"al-{i}")
    recorder = Recorder(lambda r, call: r["dynamodb"]["Keys"]["alert_id"]["S"] == "al-2")
    poller = table.poller(recorder, max_retries=2)

    poller.poll_once()

    assert [recorder.alert_ids(i) for i in range(len(recorder.events))] == [
        ["al-1", "al-2", "al-3"],
        ["al-2", "al-3"],
        ["al-2", "al-3"],
        ["al-3"],
    ]
    assert len(poller.skipped) == 1


def test_a_raising_handler_gets_the_whole_batch_again(table: AlertsTable) -> None:
    table.put("al-1")
    table.put("al-2")
    calls: list[list[str]] = []

    def flaky(event: dict[str, Any], context: Any) -> dict[str, Any]:
        calls.append([r["dynamodb"]["Keys"]["alert_id"]["S"] for r in event["Records"]])
        if len(calls) == 1:
            raise RuntimeError("cold start blew up")
        return {"batchItemFailures": []}

    table.poller(flaky).poll_once()

    assert calls == [["al-1", "al-2"], ["al-1", "al-2"]]


def test_stream_to_slack_end_to_end_and_restart_reposts_nothing(
    table: AlertsTable, aws_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = io.StringIO()
    receiver = SlackReceiver(0, out=out)
    threading.Thread(target=receiver.serve_forever, args=(0.05,), daemon=True).start()
    idem_table = f"idem-{uuid.uuid4().hex[:8]}"
    ensure_table(table.client, idem_table)
    monkeypatch.setenv("IDEMPOTENCY_TABLE", idem_table)
    monkeypatch.setenv("FRAUD_DYNAMODB_ENDPOINT", aws_env)
    monkeypatch.setenv("SLACK_WEBHOOK_URL", f"http://127.0.0.1:{receiver.port}/services/local")
    monkeypatch.setenv("FRAUD_INSPECT_BASE_URL", "http://127.0.0.1:6066")
    notifier.reset_notifier()
    try:
        table.put("al-1", card="tok_A")
        table.put("al-2", status="shadow", card="tok_B")
        table.put("al-3", card="tok_C")
        table.client.delete_item(TableName=table.name, Key={"alert_id": {"S": "al-1"}})

        table.poller(notifier.handler).poll_once()
        # A restarted poller reads the stream from the start again.
        notifier.reset_notifier()
        table.poller(notifier.handler).poll_once()
    finally:
        receiver.shutdown()
        receiver.server_close()
        notifier.reset_notifier()

    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert "tok_A" in lines[0]
    assert lines[0].endswith("-> http://127.0.0.1:6066/cards/tok_A")
    assert "tok_C" in lines[1]
    assert "tok_B" not in out.getvalue()


# --- the command lines ----------------------------------------------------------------


def _spawn(module: str, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _lines(stream: IO[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _wait_for(lines: queue.Queue[str], pattern: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        seen.append(line)
        if re.search(pattern, line):
            return line
    raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(seen)}")


@pytest.mark.parametrize(
    "args", [["--batch-size", "0"], ["--batch-size", "many"], ["--bogus"], ["--timeout", "-1"]]
)
def test_poller_cli_rejects_bad_flags_with_usage(args: list[str]) -> None:
    proc = _spawn("infra.local.stream_poller", *args)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "usage: python -m infra.local.stream_poller" in err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_poller_cli_polls_and_stops_cleanly_on_signal(
    table: AlertsTable, aws_env: str, signum: signal.Signals
) -> None:
    proc = _spawn(
        "infra.local.stream_poller",
        "--endpoint",
        aws_env,
        "--table",
        table.name,
        "--batch-size",
        "10",
    )
    assert proc.stderr is not None
    lines = _lines(proc.stderr)
    try:
        _wait_for(lines, rf"polling {re.escape(table.stream_arn)} \(batch size 10\)")
        proc.send_signal(signum)
        assert proc.wait(timeout=10) == 0
        _wait_for(lines, "stopped after 0 invocations")
    finally:
        proc.kill()
        proc.wait()


def test_poller_cli_waits_for_a_missing_table_until_stopped(aws_env: str) -> None:
    proc = _spawn("infra.local.stream_poller", "--endpoint", aws_env, "--table", "not_yet")
    assert proc.stderr is not None
    lines = _lines(proc.stderr)
    try:
        _wait_for(lines, "waiting for table not_yet")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()


def test_receiver_cli_prints_one_line_per_message_and_stops_on_sigterm() -> None:
    proc = _spawn("infra.local.slack_receiver", "--port", "0")
    assert proc.stderr is not None and proc.stdout is not None
    errors, output = _lines(proc.stderr), _lines(proc.stdout)
    try:
        banner = _wait_for(errors, r"listening on http://127\.0\.0\.1:\d+")
        base = re.search(r"http://127\.0\.0\.1:\d+", banner)
        assert base is not None
        for path, body, headers in [
            ("/services/local", {"text": "[HIGH] rule-a · card_id tok_1"}, {}),
            (
                "/api/chat.postMessage",
                {"channel": "#fraud", "text": "[LOW] rule-b · card_id tok_2"},
                {"Authorization": "Bearer xoxb-local"},
            ),
        ]:
            request = urllib.request.Request(
                base.group(0) + path,
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json", **headers},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                reply = response.read().decode()
            assert reply == "ok" or json.loads(reply)["ok"] is True
        assert "slack webhook [HIGH] rule-a · card_id tok_1" in _wait_for(output, "rule-a")
        assert "slack #fraud [LOW] rule-b" in _wait_for(output, "rule-b")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()


def test_receiver_rejects_what_slack_would_reject() -> None:
    receiver = SlackReceiver(0, out=io.StringIO())
    threading.Thread(target=receiver.serve_forever, args=(0.05,), daemon=True).start()
    base = f"http://127.0.0.1:{receiver.port}"

    def post(path: str, data: bytes, headers: dict[str, str]) -> tuple[int, str]:
        request = urllib.request.Request(base + path, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    try:
        assert post("/services/x", b"not json", {}) == (400, "invalid_payload")
        assert post("/services/x", b"{}", {}) == (400, "no_text")
        unauthenticated = post("/api/chat.postMessage", b'{"channel": "#c", "text": "t"}', {})
        assert json.loads(unauthenticated[1])["error"] == "not_authed"
        assert receiver.messages == []
    finally:
        receiver.shutdown()
        receiver.server_close()

"""The notifier handler against a real HTTP server standing in for Slack and a moto server
standing in for DynamoDB (idempotency table), SNS (+ an SQS subscriber) and Secrets Manager.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest

from infra.local.stream_poller import LocalLambdaContext
from lambdas.notifier.adapters.idempotency import ensure_table
from lambdas.notifier.handlers import notify as notifier
from tests.factories import alert_row

pytestmark = pytest.mark.integration

REGION = "us-east-1"
SECRET_PATH = "/services/T0001/B0002/s3cr3tWebhookPath"


# --- a scripted Slack -----------------------------------------------------------------

Reply = tuple[int, dict[str, str], str]


@dataclass
class SlackRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float

    @property
    def alert_id(self) -> str | None:
        match = re.search(r"· alert (\S+)$", str(self.body.get("text", "")))
        return match.group(1) if match else None


@dataclass
class FakeSlack:
    """Answers each request from ``script`` (in order), else ``responder``, else success."""

    server: ThreadingHTTPServer
    requests: list[SlackRequest] = field(default_factory=list)
    script: deque[Reply] = field(default_factory=deque)
    responder: Callable[[SlackRequest], Reply | None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def webhook_url(self) -> str:
        return self.base_url + SECRET_PATH

    def reply_for(self, request: SlackRequest) -> Reply:
        with self.lock:
            self.requests.append(request)
            if self.script:
                return self.script.popleft()
        if self.responder is not None:
            reply = self.responder(request)
            if reply is not None:
                return reply
        if request.path.startswith("/api/"):
            ok = {"ok": True, "channel": request.body.get("channel"), "ts": "1700000000.000100"}
            return 200, {"Content-Type": "application/json"}, json.dumps(ok)
        return 200, {"Content-Type": "text/plain"}, "ok"


def _slack_handler(fake: Callable[[], FakeSlack]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw)
            except json.JSONDecodeError:
                body = {"raw": raw.decode("utf-8", "replace")}
            request = SlackRequest(self.path, dict(self.headers), body, time.monotonic())
            status, headers, text = fake().reply_for(request)
            data = text.encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    holder: list[FakeSlack] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _slack_handler(lambda: holder[0]))
    server.daemon_threads = True
    holder.append(FakeSlack(server))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield holder[0]
    server.shutdown()
    server.server_close()


# --- AWS on moto ----------------------------------------------------------------------


@dataclass
class Aws:
    url: str

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=REGION, endpoint_url=self.url)

    def topic_with_subscriber(self, name: str | None = None) -> tuple[str, str]:
        """An SNS topic with an SQS queue subscribed; returns (topic ARN, queue URL)."""
        name = name or f"alerts-{uuid.uuid4().hex[:8]}"
        topic_arn = self.client("sns").create_topic(Name=name)["TopicArn"]
        return topic_arn, self.subscribe(topic_arn)

    def subscribe(self, topic_arn: str) -> str:
        sqs = self.client("sqs")
        queue_url = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.client("sns").subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
        return str(queue_url)

    def sns_messages(self, queue_url: str) -> list[dict[str, Any]]:
        """Every SNS notification delivered to the queue so far (envelopes)."""
        sqs = self.client("sqs")
        out: list[dict[str, Any]] = []
        while True:
            batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
            messages = batch.get("Messages", [])
            if not messages:
                return out
            for message in messages:
                out.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture
def aws(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    for name in list(os.environ):
        if name.startswith(("SLACK_", "SNS_", "IDEMPOTENCY_", "FRAUD_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    # boto3's own per-service endpoint variables: the handler creates plain clients.
    monkeypatch.setenv("AWS_ENDPOINT_URL_SNS", moto_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_url)
    table = f"idem-{uuid.uuid4().hex[:8]}"
    ensure_table(boto3.client("dynamodb", region_name=REGION, endpoint_url=moto_url), table)
    monkeypatch.setenv("IDEMPOTENCY_TABLE", table)
    monkeypatch.setenv("FRAUD_DYNAMODB_ENDPOINT", moto_url)
    monkeypatch.setenv("FRAUD_INSPECT_BASE_URL", "http://127.0.0.1:6066")
    notifier.reset_notifier()
    yield Aws(moto_url)
    notifier.reset_notifier()


# --- events ---------------------------------------------------------------------------


def stream_record(
    event_name: str, alert_id: str, seq: int, *, status: str = "active", ttl: bool = False
) -> dict[str, Any]:
    dynamodb: dict[str, Any] = {
        "ApproximateCreationDateTime": 1795874701,
        "Keys": {"alert_id": {"S": alert_id}},
        "SequenceNumber": str(seq),
        "SizeBytes": 512,
        "StreamViewType": "NEW_IMAGE",
    }
    if event_name != "REMOVE":
        dynamodb["NewImage"] = alert_row(alert_id, status=status)
    record: dict[str, Any] = {
        "eventID": f"event-{seq}",
        "eventName": event_name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": REGION,
        "dynamodb": dynamodb,
        "eventSourceARN": f"arn:aws:dynamodb:{REGION}:123456789012:table/fraud_alerts/stream/x",
    }
    if ttl:
        record["userIdentity"] = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    return record


def event(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}


def invoke(evt: dict[str, Any], timeout_s: float = 30.0) -> dict[str, Any]:
    result: dict[str, Any] = notifier.handler(evt, LocalLambdaContext(timeout_s))
    return result


def failed_ids(result: dict[str, Any]) -> list[str]:
    return [f["itemIdentifier"] for f in result["batchItemFailures"]]


def use_webhook(monkeypatch: pytest.MonkeyPatch, slack: FakeSlack, retries: int = 2) -> None:
    monkeypatch.setenv("SLACK_WEBHOOK_URL", slack.webhook_url)
    monkeypatch.setenv("SLACK_MAX_RETRIES", str(retries))


# --- tests ----------------------------------------------------------------------------


def test_new_active_alert_is_posted_to_slack_and_published_to_sns(
    aws: Aws, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic_arn, queue_url = aws.topic_with_subscriber()
    monkeypatch.setenv("SNS_TOPIC_ARN", topic_arn)
    use_webhook(monkeypatch, slack)

    result = invoke(event(stream_record("INSERT", "al-1", 100)))

    assert result == {"batchItemFailures": []}
    assert [r.path for r in slack.requests] == [SECRET_PATH]
    body = slack.requests[0].body
    blocks = json.dumps(body["blocks"])
    assert "high-value-burst" in blocks
    assert "`tok_4242`" in blocks
    assert "1000.00, 1200.00, 4999.99" in blocks
    assert "FR, DE" in blocks
    assert "http://127.0.0.1:6066/cards/tok_4242" in blocks
    assert body["text"].endswith("· alert al-1")

    (notification,) = aws.sns_messages(queue_url)
    assert json.loads(notification["Message"])["alert_id"] == "al-1"
    assert notification["MessageAttributes"]["severity"]["Value"] == "high"


def test_redelivered_batch_posts_and_publishes_nothing_twice(
    aws: Aws, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic_arn, queue_url = aws.topic_with_subscriber()
    monkeypatch.setenv("SNS_TOPIC_ARN", topic_arn)
    use_webhook(monkeypatch, slack)
    batch = event(stream_record("INSERT", "al-1", 100), stream_record("INSERT", "al-2", 101))

    assert invoke(batch) == {"batchItemFailures": []}
    notifier.reset_notifier()  # a redelivery may land in a fresh container
    assert invoke(batch) == {"batchItemFailures": []}
    assert invoke(event(stream_record("INSERT", "al-2", 101))) == {"batchItemFailures": []}

    assert sorted(r.alert_id or "" for r in slack.requests) == ["al-1", "al-2"]
    published = [json.loads(m["Message"])["alert_id"] for m in aws.sns_messages(queue_url)]
    assert sorted(published) == ["al-1", "al-2"]


def test_rate_limited_post_waits_for_retry_after(
    aws: Aws, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_webhook(monkeypatch, slack)
    slack.script.append((429, {"Retry-After": "1"}, "rate_limited"))

    result = invoke(event(stream_record("INSERT", "al-1", 100)))

    assert result == {"batchItemFailures": []}
    first, second = slack.requests
    assert second.at - first.at >= 0.95
    assert second.alert_id == "al-1"


def test_retry_after_beyond_the_invocation_budget_fails_fast_and_is_retried_later(
    aws: Aws, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_webhook(monkeypatch, slack)
    slack.script.append((429, {"Retry-After": "30"}, "rate_limited"))

    started = time.monotonic()
    result = invoke(event(stream_record("INSERT", "al-1", 100)), timeout_s=8.0)

    assert time.monotonic() - started < 3.0
    assert failed_ids(result) == ["100"]
    assert len(slack.requests) == 1
    # The failed attempt released its idempotency record: the redelivery posts.
    assert invoke(event(stream_record("INSERT", "al-1", 100))) == {"batchItemFailures": []}
    assert [r.alert_id for r in slack.requests] == ["al-1", "al-1"]


def test_records_are_left_for_redelivery_when_the_invocation_is_nearly_out_of_time(
    aws: Aws, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_webhook(monkeypatch, slack)
    batch = event(stream_record("INSERT", "al-1", 100), stream_record("INSERT", "al-2", 101))

    result = invoke(batch, timeout_s=3.0)

    assert failed_ids(result) == ["100", "101"]
    assert slack.requests == []


def test_server_error_fails_only_that_record(
    aws: Aws, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_webhook(monkeypatch, slack, retries=1)
    broken = True

    def answer(request: SlackRequest) -> Reply | None:
        if broken and request.alert_id == "al-bad":
            return 500, {}, "internal_error"
        return None

    slack.responder = answer
    batch = event(
        stream_record("INSERT", "al-1", 200),
        stream_record("INSERT", "al-bad", 201),
        stream_record("INSERT", "al-3", 202),
    )

    result = invoke(batch)

    assert failed_ids(result) == ["201"]
    # slack_sdk's 5xx handler retried the bad one once (SLACK_MAX_RETRIES=1).
    assert [r.alert_id for r in slack.requests] == ["al-1", "al-bad", "al-bad", "al-3"]

    broken = False
    assert invoke(batch) == {"batchItemFailures": []}
    assert [r.alert_id for r in slack.requests[4:]] == ["al-bad"]


def test_slack_posted_but_sns_failed_retries_sns_only(
    aws: Aws, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_webhook(monkeypatch, slack)
    topic_name = f"late-{uuid.uuid4().hex[:8]}"
    topic_arn = f"arn:aws:sns:{REGION}:123456789012:{topic_name}"
    monkeypatch.setenv("SNS_TOPIC_ARN", topic_arn)  # does not exist yet: publish fails
    batch = event(stream_record("INSERT", "al-1", 300))

    assert failed_ids(invoke(batch)) == ["300"]
    assert len(slack.requests) == 1

    created, queue_url = aws.topic_with_subscriber(topic_name)
    assert created == topic_arn
    assert invoke(batch) == {"batchItemFailures": []}

    assert len(slack.requests) == 1
    (notification,) = aws.sns_messages(queue_url)
    assert json.loads(notification["Message"])["alert_id"] == "al-1"


def test_remove_modify_and_shadow_records_notify_nobody(
    aws: Aws, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic_arn, queue_url = aws.topic_with_subscriber()
    monkeypatch.setenv("SNS_TOPIC_ARN", topic_arn)
    use_webhook(monkeypatch, slack)
    batch = event(
        stream_record("REMOVE", "al-1", 400, ttl=True),
        stream_record("REMOVE", "al-2", 401),
        stream_record("MODIFY", "al-3", 402),
        stream_record("INSERT", "al-4", 403, status="shadow"),
    )

    assert invoke(batch) == {"batchItemFailures": []}
    assert slack.requests == []
    assert aws.sns_messages(queue_url) == []


def test_malformed_record_is_skipped_without_blocking_the_batch(
    aws: Aws, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_webhook(monkeypatch, slack)
    broken = stream_record("INSERT", "al-x", 500)
    del broken["dynamodb"]["NewImage"]["group_key"]

    result = invoke(event(broken, stream_record("INSERT", "al-ok", 501)))

    assert result == {"batchItemFailures": []}
    assert [r.alert_id for r in slack.requests] == ["al-ok"]


def test_chat_post_message_with_bot_token(
    aws: Aws, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test-0000-secret")
    monkeypatch.setenv("SLACK_CHANNEL", "#fraud-alerts")
    monkeypatch.setenv("SLACK_API_BASE_URL", slack.base_url + "/api/")

    assert invoke(event(stream_record("INSERT", "al-1", 600))) == {"batchItemFailures": []}

    (request,) = slack.requests
    assert request.path == "/api/chat.postMessage"
    assert request.headers["Authorization"] == "Bearer xoxb-test-0000-secret"
    assert request.body["channel"] == "#fraud-alerts"
    assert "high-value-burst" in json.dumps(request.body["blocks"])


def test_chat_post_message_error_fails_the_record(
    aws: Aws, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test-0000-secret")
    monkeypatch.setenv("SLACK_CHANNEL", "#nowhere")
    monkeypatch.setenv("SLACK_API_BASE_URL", slack.base_url + "/api/")
    error = json.dumps({"ok": False, "error": "channel_not_found"})
    slack.script.append((200, {"Content-Type": "application/json"}, error))

    assert failed_ids(invoke(event(stream_record("INSERT", "al-1", 700)))) == ["700"]


def test_webhook_url_from_secrets_manager(
    aws: Aws, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = aws.client("secretsmanager").create_secret(
        Name=f"slack-{uuid.uuid4().hex[:8]}", SecretString=json.dumps({"url": slack.webhook_url})
    )
    monkeypatch.setenv("SLACK_WEBHOOK_SECRET_ARN", secret["ARN"])

    assert invoke(event(stream_record("INSERT", "al-1", 800))) == {"batchItemFailures": []}
    assert [r.path for r in slack.requests] == [SECRET_PATH]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def all_logs(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> Iterator[Callable[[], str]]:
    """Everything logged or printed: stdlib records at any level (slack_sdk's included),
    the notifier's Powertools JSON lines with their extra keys, stdout and stderr."""
    buffer = io.StringIO()
    capture = logging.StreamHandler(buffer)
    capture.setFormatter(notifier.logger.registered_formatter)
    powertools_logger = logging.getLogger(notifier.logger.name)
    powertools_logger.addHandler(capture)
    caplog.set_level(logging.DEBUG)

    def text() -> str:
        out, err = capfd.readouterr()
        return "\n".join([out, err, caplog.text, buffer.getvalue()])

    yield text
    powertools_logger.removeHandler(capture)


def test_webhook_url_never_reaches_the_logs(
    aws: Aws, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch, all_logs: Callable[[], str]
) -> None:
    # 1. Nothing listening: connection refused, retried by slack_sdk (which logs the URL
    #    of a retried request unless its logger is tamed).
    monkeypatch.setenv("SLACK_WEBHOOK_URL", f"http://127.0.0.1:{_free_port()}{SECRET_PATH}")
    monkeypatch.setenv("SLACK_MAX_RETRIES", "1")
    assert failed_ids(invoke(event(stream_record("INSERT", "al-1", 900)))) == ["900"]

    # 2. An error page quoting the request path back.
    notifier.reset_notifier()
    monkeypatch.setenv("SLACK_WEBHOOK_URL", slack.webhook_url)
    slack.script.append((404, {}, f"no_service for {SECRET_PATH}"))
    assert failed_ids(invoke(event(stream_record("INSERT", "al-2", 901)))) == ["901"]

    logged = all_logs()
    assert "webhook request failed" in logged
    assert "webhook answered HTTP 404" in logged
    assert "s3cr3tWebhookPath" not in logged

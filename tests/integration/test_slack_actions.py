"""Slack's buttons against real servers: a worker with its cases table (DynamoDB Local)
and labels topic (Kafka), the action handler served on loopback as its function URL
serves it, and the local Slack stand-in receiving the message update (response_url).

A signed press closes the case (the label reaches the topic, the message says so); an
unsigned, forged, stale or replayed request is refused with 401, changes nothing, and is
logged with its reason and never with the secret."""

from __future__ import annotations

import io
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from slack_sdk.signature import SignatureVerifier

from app.cases.model import case_id_for, parse_closing
from app.cases.store import CaseStore
from app.detection.models import iso_from_ms
from infra.local.slack_actions import ActionServer, actions_from
from infra.local.slack_receiver import SlackReceiver
from infra.local.stack import LocalStack
from infra.local.stream_poller import LocalLambdaContext
from lambdas.notifier.adapters.cases import CaseMessages, number, release, text
from lambdas.slack_actions import closer
from lambdas.slack_actions.config import ActionsConfig
from tests import factories
from tests.factories import payment
from tests.integration.harness import Pipeline, http, keyed, produce, read_all, run, wait_until
from tests.integration.test_cases import notify_from_the_stream

pytestmark = pytest.mark.integration

TOKEN = "test-token-not-a-secret"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # Slack's documented example secret


class Slack:
    """What Slack would send: a button press, signed with the app's secret (or not)."""

    def __init__(self, url: str, response_url: str) -> None:
        self.url = url
        self.response_url = response_url

    def body(self, case_id: str, action_id: str = "case_fraud") -> str:
        payload = {
            "type": "block_actions",
            "user": {"id": "U0ALICE", "username": "alice"},
            "actions": [{"action_id": action_id, "value": case_id, "type": "button"}],
            "response_url": self.response_url,
            "message": {
                "blocks": [
                    {"type": "header", "text": {"type": "plain_text", "text": "HIGH fraud alert"}},
                    {"type": "actions", "elements": []},
                ]
            },
        }
        return urllib.parse.urlencode({"payload": json.dumps(payload)})

    @staticmethod
    def headers(body: str, secret: str = SIGNING_SECRET, at: float | None = None) -> dict[str, str]:
        timestamp = str(int(time.time() if at is None else at))
        signature = SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body)
        assert signature is not None
        return {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature}

    def post(self, body: str, headers: dict[str, str]) -> int:
        request = urllib.request.Request(
            self.url,
            data=body.encode(),
            method="POST",
            headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)


@pytest.fixture
def receiver() -> Iterator[SlackReceiver]:
    server = SlackReceiver(0, out=io.StringIO())
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def open_cases(base: str, card: str, count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def listed() -> bool:
        status, body = http("GET", f"{base}/cases?key={card}&status=open")
        assert status == 200, body
        found[:] = body["cases"]
        return len(found) >= count

    wait_until(listed, 60, f"{count} open case(s) on {card}")
    return found


def test_a_signed_press_closes_the_case_and_forged_stale_and_replayed_ones_are_refused(
    pipeline: Pipeline,
    stack: LocalStack,
    receiver: SlackReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipeline.enable_sink()
    pipeline.extra_env["FRAUD_API_TOKEN"] = TOKEN
    start = int(time.time() * 1000) - 60_000
    card = f"tok_slack_{pipeline.uid}"
    payments = [
        payment(card, f"{pipeline.uid}-{n}", "1500", ts_ms=start + n * 1000) for n in range(3)
    ]
    worker = pipeline.worker("slack").start()
    local = f"http://127.0.0.1:{receiver.port}/"
    config = ActionsConfig.from_env(
        {
            "REPLAY_TABLE": f"replays_{pipeline.uid}",
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "CASES_API_URL": f"http://127.0.0.1:{worker.web_port}",
            "FRAUD_API_TOKEN": TOKEN,
            "SLACK_RESPONSE_URL_PREFIX": local,
            "FRAUD_DYNAMODB_ENDPOINT": stack.dynamodb_endpoint,
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
        }
    )
    server = ActionServer(actions_from(config))
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    slack = Slack(f"http://127.0.0.1:{server.port}/", f"{local}actions/T0/1/xyz")
    try:
        run(produce(stack.bootstrap, pipeline.payments, keyed(payments)))
        base = f"http://127.0.0.1:{worker.web_port}"
        [case] = open_cases(base, card, 1)
        case_id = case["case_id"]
        body = slack.body(case_id)

        # Refused, each for its reason, and the case stays open.
        assert slack.post(body, {}) == 401
        assert slack.post(body, slack.headers(body, secret="not-the-signing-secret")) == 401
        forged = slack.headers(body)
        assert slack.post(slack.body(case_id, "case_not_fraud"), forged) == 401  # other body
        assert slack.post(body, slack.headers(body, at=time.time() - 6 * 60)) == 401
        assert http("GET", f"{base}/cases/{case_id}")[1]["status"] == "open"
        assert receiver.messages == []

        # Signed and new: closed as fraud by the one who pressed, label on the topic.
        signed = slack.headers(body)
        assert slack.post(body, signed) == 200
        closed = http("GET", f"{base}/cases/{case_id}")[1]
        assert (closed["status"], closed["disposition"], closed["closed_by"]) == (
            "closed",
            "fraud",
            "slack:alice",
        )
        [record] = run(read_all(stack.bootstrap, pipeline.labels, 1, idle_s=1.0, until=1))
        assert record.key == f"case:{case_id}".encode()
        label = json.loads(record.value)
        assert (label["label"], label["by"]) == ("fraud", "slack:alice")
        # The message is replaced: its buttons gone, how the case closed in their place.
        [update] = receiver.messages
        assert update["replace_original"] is True
        assert [b["type"] for b in update["blocks"]] == ["header", "context"]
        assert "closed as *fraud* by slack:alice" in json.dumps(update)

        # The same request again (same timestamp and signature): a replay.
        assert slack.post(body, signed) == 401
        assert len(receiver.messages) == 1

        # On AWS the close runs in the closer function (inside the VPC), handed the request
        # and the token: the same close again is the API's no-op, a wrong token its 401.
        os.environ["CASES_API_URL"] = base
        try:
            request = {
                "case_id": case_id,
                "disposition": "fraud",
                "note": "fraud (Slack button, by alice)",
                "closed_by": "slack:alice",
            }
            again = closer.handler({**request, "token": TOKEN}, LocalLambdaContext(5))
            assert (again["status"], again["body"]["already"]) == (200, True)
            wrong = closer.handler({**request, "token": "wrong"}, LocalLambdaContext(5))
            assert wrong["status"] == 401
        finally:
            del os.environ["CASES_API_URL"]
    finally:
        server.shutdown()
        server.server_close()
        worker.stop()
        pipeline.drop_tables()
        stack.client().delete_table(TableName=config.replay_table)

    mine = [r for r in caplog.records if r.name == "fraud-slack-actions"]
    reasons = [
        str(r.__dict__["reason"]).split(":")[0]
        for r in mine
        if r.getMessage() == "slack request refused"
    ]
    assert reasons == ["unsigned", "bad signature", "bad signature", "stale", "replayed"], reasons
    text = " ".join(f"{r.getMessage()} {r.__dict__}" for r in mine)
    assert SIGNING_SECRET not in text and TOKEN not in text


def test_a_later_alert_of_an_open_case_updates_its_message_instead_of_paging(
    pipeline: Pipeline, stack: LocalStack, receiver: SlackReceiver
) -> None:
    stream_arn = pipeline.enable_sink()
    start = int(time.time() * 1000) - 60_000
    card = f"tok_upd_{pipeline.uid}"
    # Two bursts of the seed rule on one card: two alerts, one case.
    payments = [
        payment(card, f"{pipeline.uid}-{n}", "1500", ts_ms=start + n * 1000) for n in range(6)
    ]
    worker = pipeline.worker("update").start()
    try:
        run(produce(stack.bootstrap, pipeline.payments, keyed(payments)))
        base = f"http://127.0.0.1:{worker.web_port}"

        def both_alerts_in() -> bool:
            cases = http("GET", f"{base}/cases?key={card}")[1]["cases"]
            return bool(cases) and cases[0]["alert_count"] == 2

        wait_until(both_alerts_in, 60, "one case holding both alerts")
        [case] = http("GET", f"{base}/cases?key={card}")[1]["cases"]
        # A bot token (chat.postMessage, chat.update) and the cases table for the message's ts.
        notify_from_the_stream(
            stack,
            stream_arn,
            {
                "SLACK_BOT_TOKEN": "xoxb-local-test-token",
                "SLACK_CHANNEL": "#fraud",
                "SLACK_API_BASE_URL": f"http://127.0.0.1:{receiver.port}/api/",
                "CASES_TABLE": pipeline.cases_table,
            },
        )
    finally:
        worker.stop()
    try:
        posted = [m for m in receiver.messages if "replace_original" not in m]
        # One page (the alert that opened the case), then its message updated in place.
        pages = [m for m in posted if "ts" in m and m.get("channel") == "#fraud" and "blocks" in m]
        assert len(pages) == 2, pages  # the post and the update, both on the one message
        first, update = pages
        assert update["ts"] == first["ts"]
        assert "(2 alerts)" in json.dumps(update["blocks"]) and "(2 alerts)" not in json.dumps(
            first["blocks"]
        )
        buttons = [
            e["action_id"]
            for b in update["blocks"]
            if b["type"] == "actions"
            for e in b["elements"]
        ]
        assert buttons[:3] == ["case_fraud", "case_not_fraud", "open_case"]
        item = stack.client().get_item(
            TableName=pipeline.cases_table, Key={"pk": {"S": f"case#{case['case_id']}"}}
        )["Item"]
        assert (item["slack_ts"]["S"], item["slack_shown"]["N"]) == (first["ts"], "2")
    finally:
        pipeline.drop_tables()


def test_the_case_message_is_kept_once_and_each_update_claims_a_newer_count(
    stack: LocalStack,
) -> None:
    """The conditional writes behind chat.update, on DynamoDB Local."""
    uid = uuid.uuid4().hex[:8]
    alerts, cases = f"alerts_{uid}", f"cases_{uid}"
    stack.create_alerts_table(alerts)
    stack.create_cases_table(cases)
    client = stack.client()
    try:
        store = CaseStore(cases, alerts, client)
        now = int(time.time() * 1000)
        opening = factories.alert(1, detected_at=iso_from_ms(now))
        store.write_alert(opening, now)
        store.write_alert(factories.alert(2, detected_at=iso_from_ms(now + 1000)), now)
        case_id = case_id_for(opening)
        messages = CaseMessages(client, cases)
        kept = messages.remember(case_id, "C1", "111.222")
        assert kept is not None and number(kept, "alert_count") == 2
        assert messages.remember(case_id, "C1", "333.444") is None  # a redelivery: kept once
        assert text(messages.get(case_id) or {}, "slack_ts") == "111.222"
        assert messages.claim(case_id, 1) is False  # the post shows one already
        assert messages.claim(case_id, 2) is True
        assert messages.claim(case_id, 2) is False  # another update of the same state
        release(messages, case_id, 2)  # its chat.update failed: the retry may claim again
        assert messages.claim(case_id, 2) is True
        store.close(case_id, parse_closing("fraud", "seen", "alice"), iso_from_ms(now))
        assert messages.claim(case_id, 3) is False  # closed: its message is the close's
    finally:
        for table in (alerts, cases):
            client.delete_table(TableName=table)

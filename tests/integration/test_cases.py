"""Cases against DynamoDB Local: alerts grouped beside their rows, effectively once; cases
closed with a disposition; the next alert opens a new case."""

from __future__ import annotations

import io
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import pytest

from app.cases.model import CaseError, CaseFilter, Role, parse_closing
from app.cases.store import CaseStore
from app.detection.models import Alert, iso_from_ms
from infra.local.slack_receiver import SlackReceiver
from infra.local.stack import LocalStack
from infra.local.stream_poller import StreamPoller
from lambdas.notifier.adapters.idempotency import ensure_table
from lambdas.notifier.handlers import notify as notifier
from tests.cli import assert_one_error_line, free_port, run_cli
from tests.factories import alert, payment
from tests.integration.harness import (
    Pipeline,
    http,
    keyed,
    produce,
    read_all,
    run,
    wait_until,
)

pytestmark = pytest.mark.integration

NOW_MS = int(time.time() * 1000)
WRITTEN_MS = NOW_MS


@dataclass
class Tables:
    store: CaseStore
    client: Any

    def alert_row(self, alert_id: str) -> dict[str, Any] | None:
        item: dict[str, Any] | None = self.client.get_item(
            TableName=self.store.alerts_table,
            Key={"alert_id": {"S": alert_id}},
            ConsistentRead=True,
        ).get("Item")
        return item

    def case_items(self) -> list[dict[str, Any]]:
        items = self.client.scan(TableName=self.store.table, ConsistentRead=True)["Items"]
        return [item for item in items if item["pk"]["S"].startswith("case#")]


@pytest.fixture
def tables(stack: LocalStack) -> Iterator[Tables]:
    uid = uuid.uuid4().hex[:8]
    alerts, cases = f"alerts_{uid}", f"cases_{uid}"
    stack.create_alerts_table(alerts)
    stack.create_cases_table(cases)
    client = stack.client()
    yield Tables(CaseStore(cases, alerts, client), client)
    for table in (alerts, cases):
        client.delete_table(TableName=table)


def burst(n: int, key: str = "card-tok-1", **overrides: Any) -> Alert:
    return alert(
        n,
        group_key=key,
        txn_ids=(f"t{n}a", f"t{n}b", f"t{n}c"),
        # Recent: DynamoDB Local's TTL sweeper deletes rows whose expires_at has passed.
        detected_at=iso_from_ms(NOW_MS + n * 60_000),
        **overrides,
    )


def closing(disposition: str = "fraud") -> Any:
    return parse_closing(disposition, "customer confirmed", "alice")


def test_the_first_alert_opens_a_case_and_later_ones_join_it(tables: Tables) -> None:
    store = tables.store
    assert store.write_alert(burst(1), WRITTEN_MS) is Role.OPENED
    assert store.write_alert(burst(2), WRITTEN_MS) is Role.JOINED
    assert store.write_alert(burst(3, key="card-tok-2"), WRITTEN_MS) is Role.OPENED

    [case] = store.list(CaseFilter(group_key="card-tok-1"))
    assert (case.status, case.alert_count, case.alert_ids) == (
        "open",
        2,
        (burst(1).alert_id, burst(2).alert_id),
    )
    assert case.txn_ids == ("t1a", "t1b", "t1c", "t2a", "t2b", "t2c")
    assert (case.opened_at, case.last_alert_at) == (burst(1).detected_at, burst(2).detected_at)
    row = tables.alert_row(burst(2).alert_id)
    assert row is not None
    assert (row["case_id"]["S"], row["case_role"]["S"]) == (case.case_id, "joined")
    assert len(store.list(CaseFilter(status="open"))) == 2


def test_a_replayed_alert_changes_nothing(tables: Tables) -> None:
    store = tables.store
    store.write_alert(burst(1), WRITTEN_MS)
    store.write_alert(burst(2), WRITTEN_MS)
    before = tables.case_items()
    assert store.write_alert(burst(1), WRITTEN_MS + 5) is None
    assert store.write_alert(burst(2), WRITTEN_MS + 5) is None
    assert tables.case_items() == before


def test_a_replay_of_the_opening_alert_after_its_case_closed_opens_no_second_case(
    tables: Tables,
) -> None:
    store = tables.store
    store.write_alert(burst(1), WRITTEN_MS)
    [case] = store.list(CaseFilter())
    store.close(case.case_id, closing(), "2026-11-28T15:00:00.000Z")
    # Even once the alert's row has expired (TTL), the replay finds the case it went to.
    tables.client.delete_item(
        TableName=store.alerts_table, Key={"alert_id": {"S": burst(1).alert_id}}
    )
    assert store.write_alert(burst(1), WRITTEN_MS + 5) is Role.REPLAYED
    assert [c.case_id for c in store.list(CaseFilter())] == [case.case_id]
    row = tables.alert_row(burst(1).alert_id)
    assert row is not None and row["case_role"]["S"] == "replayed"
    assert row["case_id"]["S"] == case.case_id


def test_closing_records_the_disposition_and_the_next_alert_opens_a_new_case(
    tables: Tables,
) -> None:
    store = tables.store
    store.write_alert(burst(1), WRITTEN_MS)
    [case] = store.list(CaseFilter())
    closed, now = store.close(
        case.case_id,
        parse_closing("not_fraud", "card 4111 1111 1111 1111 is the owner's", " bob "),
        "2026-11-28T15:00:00.000Z",
    )
    assert now
    assert (closed.status, closed.disposition, closed.closed_by, closed.closed_at) == (
        "closed",
        "not_fraud",
        "bob",
        "2026-11-28T15:00:00.000Z",
    )
    assert closed.note == "card **** **** **** 1111 is the owner's"

    assert store.write_alert(burst(2), WRITTEN_MS) is Role.OPENED
    assert [c.status for c in store.list(CaseFilter())] == ["open", "closed"]
    assert [c.case_id for c in store.list(CaseFilter(disposition="not_fraud"))] == [case.case_id]


def test_closing_again_is_a_no_op_for_the_same_request_and_refused_otherwise(
    tables: Tables,
) -> None:
    store = tables.store
    store.write_alert(burst(1), WRITTEN_MS)
    [case] = store.list(CaseFilter())
    store.close(case.case_id, closing(), "2026-11-28T15:00:00.000Z")
    again, now = store.close(case.case_id, closing(), "2026-11-28T15:05:00.000Z")
    assert not now and again.closed_at == "2026-11-28T15:00:00.000Z"
    with pytest.raises(CaseError, match="already closed \\(fraud, by alice") as refused:
        store.close(case.case_id, closing("not_fraud"), "2026-11-28T15:05:00.000Z")
    assert refused.value.status == 409
    with pytest.raises(CaseError, match="no case") as missing:
        store.close("0" * 24, closing(), "2026-11-28T15:05:00.000Z")
    assert missing.value.status == 404


def test_alerts_of_one_rule_and_key_written_at_once_open_one_case(tables: Tables) -> None:
    alerts = [burst(n) for n in range(1, 13)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        roles = list(pool.map(lambda a: tables.store.write_alert(a, WRITTEN_MS), alerts))
    assert roles.count(Role.OPENED) == 1 and roles.count(Role.JOINED) == 11
    [case] = tables.store.list(CaseFilter())
    assert case.alert_count == 12 and sorted(case.alert_ids) == sorted(a.alert_id for a in alerts)


def test_cases_are_listed_newest_first_and_filtered(tables: Tables) -> None:
    store = tables.store
    for n in range(1, 6):
        store.write_alert(burst(n, key=f"card-{n}"), WRITTEN_MS)
    store.write_alert(replace(burst(6, key="card-1"), rule_id="other-rule"), WRITTEN_MS)
    listed = store.list(CaseFilter(limit=3))
    assert [c.group_key for c in listed] == ["card-1", "card-5", "card-4"]
    assert [c.rule_id for c in listed] == ["other-rule", "high-value-burst", "high-value-burst"]
    assert [c.group_key for c in store.list(CaseFilter(rule_id="high-value-burst", limit=2))] == [
        "card-5",
        "card-4",
    ]
    assert store.list(CaseFilter(status="closed")) == []


# --- the whole path: payments -> worker -> alerts and cases -> notifier -> Slack; the API
# and the CLI -------------------------------------------------------------------------------

TOKEN = "test-token-not-a-secret"


def notify_from_the_stream(stack: LocalStack, stream_arn: str, slack: dict[str, str]) -> None:
    """Every record on the alerts table's stream through the real notifier handler, as the
    Lambda's event source mapping hands them over; ``slack`` is its Slack settings."""
    client = stack.client()
    idempotency = f"idem_{uuid.uuid4().hex[:8]}"
    ensure_table(client, idempotency)
    saved = dict(os.environ)
    os.environ.update(
        {
            "IDEMPOTENCY_TABLE": idempotency,
            "FRAUD_DYNAMODB_ENDPOINT": stack.dynamodb_endpoint,
            **slack,
            "FRAUD_INSPECT_BASE_URL": "http://127.0.0.1:6066",
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_REGION": "us-east-1",
        }
    )
    notifier.reset_notifier()
    try:
        StreamPoller(
            streams_client=stack.client("dynamodbstreams"),
            stream_arn=stream_arn,
            handler=notifier.handler,
            retry_backoff_s=0.01,
        ).poll_once()
    finally:
        os.environ.clear()
        os.environ.update(saved)
        notifier.reset_notifier()
        client.delete_table(TableName=idempotency)


def test_a_burst_opens_a_case_a_second_joins_it_without_a_page_and_an_analyst_closes_it(
    pipeline: Pipeline, stack: LocalStack
) -> None:
    stream_arn = pipeline.enable_sink()
    pipeline.extra_env["FRAUD_API_TOKEN"] = TOKEN
    start = int(time.time() * 1000) - 60_000
    card = f"tok_case_{pipeline.uid}"
    # Two bursts of the seed rule on one card (3 payments >= 1000 within 5 minutes each).
    payments = [
        payment(card, f"{pipeline.uid}-{n}", "1500", ts_ms=start + n * 1000) for n in range(6)
    ]
    worker = pipeline.worker("cases").start()
    try:
        run(produce(stack.bootstrap, pipeline.payments, keyed(payments)))
        base = f"http://127.0.0.1:{worker.web_port}"

        def the_case() -> dict[str, Any] | None:
            status, body = http("GET", f"{base}/cases?key={card}")
            assert status == 200, body
            cases = body["cases"]
            return cases[0] if cases and cases[0]["alert_count"] == 2 else None

        wait_until(lambda: the_case() is not None, 60, "one case holding both alerts")
        case = the_case()
        assert case is not None and case["status"] == "open"
        assert case["rule_id"] == "high-value-burst" and case["group_key"] == card
        assert sorted(case["txn_ids"]) == sorted(p.txn_id for p in payments)

        out = io.StringIO()
        receiver = SlackReceiver(0, out=out)
        threading.Thread(target=receiver.serve_forever, args=(0.05,), daemon=True).start()
        try:
            webhook = f"http://127.0.0.1:{receiver.port}/services/local"
            notify_from_the_stream(stack, stream_arn, {"SLACK_WEBHOOK_URL": webhook})
        finally:
            receiver.shutdown()
            receiver.server_close()
        pages = out.getvalue().splitlines()
        assert len(pages) == 1, pages  # the second alert joined the case: no second page
        assert case["case_id"] in pages[0] and card in pages[0]

        url = f"{base}/cases/{case['case_id']}/close"
        good = {"disposition": "fraud", "note": "customer denies both", "closed_by": "alice"}
        assert http("POST", url, good)[0] == 401
        status, body = http("POST", url, {**good, "disposition": "maybe"}, token=TOKEN)
        assert (status, body["field"]) == (400, "disposition")
        status, body = http("POST", url, good, token=TOKEN)
        assert status == 200 and body["closed"]["disposition"] == "fraud", body
        # The disposition is a label on the labels topic, keyed by the case it labels.
        [record] = run(read_all(stack.bootstrap, pipeline.labels, 1, idle_s=1.0, until=1))
        label = json.loads(record.value)
        assert record.key == f"case:{case['case_id']}".encode()
        assert (label["label"], label["by"]) == ("fraud", "alice")
        assert sorted(label["txn_ids"]) == sorted(p.txn_id for p in payments)
        status, body = http("POST", url, {**good, "disposition": "not_fraud"}, token=TOKEN)
        assert status == 409 and "already closed" in body["error"]
        assert http("GET", f"{base}/cases/{'f' * 24}")[0] == 404
        status, body = http("GET", f"{base}/cases?status=shut")
        assert (status, body["parameter"]) == (400, "status")

        # The CLI sees the same cases, and refuses in one line.
        listed = run_cli(["cases", "list", "--status", "closed"], worker.env)
        assert listed.returncode == 0, listed.stderr
        [line] = listed.stdout.splitlines()
        assert line.startswith(f"{case['case_id']}\tclosed\tfraud\thigh-value-burst\t")
        shown = run_cli(["cases", "show", case["case_id"]], worker.env)
        assert json.loads(shown.stdout)["closed_by"] == "alice"
        refused = run_cli(
            [
                "cases",
                "close",
                case["case_id"],
                "--disposition",
                "not_fraud",
                "--note",
                "x",
                "--by",
                "bob",
            ],
            worker.env,
        )
        assert_one_error_line(refused, 1, "already closed")
        assert_one_error_line(run_cli(["cases", "show", "nope"], worker.env), 2, "case_id")
        assert_one_error_line(
            run_cli(["cases", "close", case["case_id"]], worker.env), 2, "--disposition"
        )
        assert_one_error_line(run_cli(["cases", "show", "0" * 24], worker.env), 1, "no case")
    finally:
        worker.stop()
        pipeline.drop_tables()


def test_the_cli_names_a_missing_cases_table_in_one_line(pipeline: Pipeline) -> None:
    env = {**pipeline.env("cli", free_port()), "FRAUD_CASES_TABLE": f"missing_{pipeline.uid}"}
    assert_one_error_line(run_cli(["cases", "list"], env), 1, f"missing_{pipeline.uid}")


def test_chargebacks_imported_from_a_file_are_labels_keyed_by_payment(
    pipeline: Pipeline, tmp_path: Any
) -> None:
    env = pipeline.env("cli", free_port())
    good = tmp_path / "chargebacks.csv"
    good.write_text("txn_id,date,reason\nt-1,2026-11-28,stolen card\nt-2,2026-11-29,not me\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("txn_id,date,reason\nt-3,2026-11-28,x\nt-4,yesterday,y\n")

    refused = run_cli(["labels", "import", str(bad)], env)
    assert_one_error_line(refused, 1, "bad.csv", "line 3", "date")
    imported = run_cli(["labels", "import", str(good)], env)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == f"published 2 chargeback labels to {pipeline.labels}"
    assert_one_error_line(run_cli(["labels", "import", str(tmp_path / "no.csv")], env), 2, "no.csv")

    records = run(read_all(pipeline.stack.bootstrap, pipeline.labels, 1, idle_s=1.0))
    assert [(r.key, json.loads(r.value)["label"]) for r in records] == [
        (b"txn:t-1", "fraud"),
        (b"txn:t-2", "fraud"),
    ]  # nothing of the refused file

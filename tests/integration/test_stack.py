"""The local stack: real Kafka and DynamoDB Local, loopback only, and nothing left behind."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from botocore.exceptions import BotoCoreError, ClientError

from infra.local import relay
from infra.local.stack import LocalStack, Topic, default_topics, group_members

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(partitions=3) as s:
        yield s


def _roundtrip(bootstrap: str, topic: str, value: bytes, *, produce: bool = True) -> bytes:
    async def run() -> bytes:
        if produce:
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
            await producer.start()
            try:
                await producer.send_and_wait(topic, value, key=b"card-1")
            finally:
                await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            async with asyncio.timeout(30):
                async for msg in consumer:
                    if msg.value == value:
                        return value
        finally:
            await consumer.stop()
        raise AssertionError("unreachable")

    return asyncio.run(run())


def _topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    async def run() -> dict[str, str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            [response] = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic)]
            )
        finally:
            await admin.close()
        entries = response.resources[0][4]
        return {entry[0]: entry[1] for entry in entries}

    return asyncio.run(run())


def test_addresses_and_env(stack: LocalStack) -> None:
    assert re.fullmatch(r"kafka://127\.0\.0\.1:\d+", stack.broker_url)
    assert stack.bootstrap == stack.broker_url.removeprefix("kafka://")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", stack.dynamodb_endpoint)
    env = stack.env()
    assert env["FRAUD_BROKER"] == stack.broker_url
    assert env["FRAUD_DYNAMODB_ENDPOINT"] == stack.dynamodb_endpoint
    assert env["AWS_ACCESS_KEY_ID"] and env["AWS_DEFAULT_REGION"]


def test_kafka_produce_consume(stack: LocalStack) -> None:
    stack.create_topics([*default_topics(3), Topic("stack.smoke", 2)])
    stack.create_topics(["stack.smoke", "payments.raw"])  # idempotent
    assert _roundtrip(stack.bootstrap, "stack.smoke", b"hello") == b"hello"
    assert _topic_config(stack.bootstrap, "fraud.rules")["cleanup.policy"] == "compact"


def test_alerts_table_and_stream(stack: LocalStack) -> None:
    arn = stack.create_alerts_table()
    assert stack.create_alerts_table() == arn  # idempotent
    ddb = stack.client()
    table = ddb.describe_table(TableName="fraud_alerts")["Table"]
    assert table["KeySchema"] == [{"AttributeName": "alert_id", "KeyType": "HASH"}]
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
    ttl = ddb.describe_time_to_live(TableName="fraud_alerts")["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at"
    ddb.put_item(TableName="fraud_alerts", Item={"alert_id": {"S": "a-1"}, "n": {"N": "3"}})

    streams = stack.client("dynamodbstreams")
    shards = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    records: list[dict[str, Any]] = []
    for shard in shards:
        it = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records += streams.get_records(ShardIterator=it)["Records"]
    inserts = [r for r in records if r["eventName"] == "INSERT"]
    assert inserts and inserts[0]["dynamodb"]["NewImage"]["alert_id"] == {"S": "a-1"}


def _host_listeners() -> list[tuple[str, set[int]]]:
    out = subprocess.run(["ss", "-ltnpH"], check=True, capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        local = line.split()[3]
        rows.append((local, {int(p) for p in re.findall(r"pid=(\d+)", line)}))
    return rows


def _comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_nothing_listens_beyond_loopback(stack: LocalStack) -> None:
    ours = set(stack.leftover_processes())
    assert ours
    for local, pids in _host_listeners():
        if pids & ours:
            assert local.rsplit(":", 1)[0] in ("127.0.0.1", "[::ffff:127.0.0.1]"), local
    if stack.dynamodb_backend != "dynamodb-local":
        pytest.skip(f"DynamoDB is {stack.dynamodb_backend}, bound to 127.0.0.1 directly")
    group = stack.process_groups()["dynamodb"]
    java = [p for p in ours if _comm(p) == "java" and os.getpgid(p) == group]
    assert len(java) == 1
    # DynamoDB Local binds every interface, but no interface of the host's namespace...
    assert all(java[0] not in pids for _, pids in _host_listeners())
    # ...because it lives in a namespace whose only interface is its own loopback.
    inside = subprocess.run(
        ["nsenter", "-t", str(java[0]), "-n", "ss", "-ltnH"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert re.search(r"(\*|0\.0\.0\.0|\[::\]):8000\b", inside), inside
    links = subprocess.run(
        ["nsenter", "-t", str(java[0]), "-n", "ip", "-o", "link"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    assert [line.split(":")[1].strip() for line in links] == ["lo"]


def test_dynamodb_restarts_on_same_endpoint(stack: LocalStack) -> None:
    stack.create_alerts_table()
    endpoint = stack.dynamodb_endpoint
    stack.client().put_item(TableName="fraud_alerts", Item={"alert_id": {"S": "kept"}})
    stack.stop_dynamodb()
    with pytest.raises((BotoCoreError, ClientError)):
        stack.client(read_timeout=2, attempts=1).list_tables()
    time.sleep(2)
    stack.start_dynamodb()
    assert stack.dynamodb_endpoint == endpoint
    item = stack.client().get_item(TableName="fraud_alerts", Key={"alert_id": {"S": "kept"}})
    if stack.dynamodb_backend == "dynamodb-local":  # moto keeps nothing across a restart
        assert item["Item"]["alert_id"] == {"S": "kept"}


def test_kafka_crash_and_restart_keeps_data(stack: LocalStack) -> None:
    if stack.kafka_backend != "kafka":
        pytest.skip(f"broker is {stack.kafka_backend}")
    stack.create_topics([Topic("stack.crash", 1)])
    _roundtrip(stack.bootstrap, "stack.crash", b"before-crash")
    bootstrap = stack.bootstrap
    stack.kill_kafka()
    stack.restart_kafka()
    assert stack.bootstrap == bootstrap
    assert _roundtrip(bootstrap, "stack.crash", b"before-crash", produce=False) == b"before-crash"


def _identity(pid: int) -> tuple[int, str] | None:
    """pid and start time: a pid number alone may be recycled (pid_max can be 32768)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] == "Z" else (pid, fields[19])


def test_stop_leaves_no_process(stack: LocalStack) -> None:
    before = [ident for pid in stack.leftover_processes() if (ident := _identity(pid))]
    assert len(before) >= 2
    stack.stop()
    assert stack.leftover_processes() == []
    assert [ident for ident in before if _identity(ident[0]) == ident] == []


_PARENT = """
import time
from infra.local.stack import LocalStack
s = LocalStack(kafka=False).start()
print(s.run_dir, *s.process_groups().values(), flush=True)
time.sleep(600)
"""
# PID 1 of a container often reaps nobody: a subreaper adopts the orphans and reaps them, and
# exits only when every descendant is gone.
_SUBREAPER = """
import ctypes, os, subprocess, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
print(subprocess.Popen([sys.executable, "-c", sys.argv[1]]).pid, flush=True)
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
"""


def test_children_die_with_a_killed_parent() -> None:
    reaper = subprocess.Popen(
        [sys.executable, "-c", _SUBREAPER, _PARENT], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    run_dir = None
    try:
        assert reaper.stdout is not None
        parent = int(reaper.stdout.readline())
        run_dir, *groups = reaper.stdout.readline().split()
        assert group_members(int(g) for g in groups), "the stack did not start"
        os.kill(parent, signal.SIGKILL)
        reaper.wait(15)  # every descendant is gone, not only the process groups
    finally:
        reaper.kill()
        reaper.wait()
        if run_dir:
            shutil.rmtree(run_dir, ignore_errors=True)


_ECHO = textwrap.dedent(
    """
    import asyncio, sys
    async def serve(r, w):
        data = await r.read()        # until the client half-closes
        w.write(data[::-1] + b"|eof")
        await w.drain()
        w.close()
    async def main():
        server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]))
        await server.serve_forever()
    asyncio.run(main())
    """
)


def test_relay_many_connections_and_half_close(tmp_path: Path) -> None:
    """The relay carries concurrent connections and a half-close in both directions."""
    if subprocess.run(["unshare", "-rn", "true"], check=False).returncode != 0:
        pytest.skip("no user/network namespaces here")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)
    port = listener.getsockname()[1]
    proc = subprocess.Popen(
        [
            "unshare",
            "-rn",
            sys.executable,
            "-I",
            relay.__file__,
            "--listen-fd",
            str(listener.fileno()),
            "--target-port",
            "9000",
            "--",
            sys.executable,
            "-c",
            _ECHO,
            "9000",
        ],
        pass_fds=(listener.fileno(),),
        start_new_session=True,
    )
    listener.close()

    async def one(i: int) -> bytes:
        payload = f"{i}:".encode() + b"x" * (i * 997 % 200_000)
        for _ in range(100):  # the echo server needs a moment to come up
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(payload)
                await writer.drain()
                writer.write_eof()
                if reply := await reader.read():
                    return reply
            except OSError:  # ConnectionError, or ENOTCONN from write_eof while it starts
                pass
            finally:
                writer.close()
            await asyncio.sleep(0.05)
        return b""

    async def many() -> list[bytes]:
        async with asyncio.timeout(60):
            await one(0)
            return await asyncio.gather(*(one(i) for i in range(300)))

    try:
        replies = asyncio.run(many())
        for i, reply in enumerate(replies):
            payload = f"{i}:".encode() + b"x" * (i * 997 % 200_000)
            assert reply == payload[::-1] + b"|eof"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
    assert proc.returncode == 0

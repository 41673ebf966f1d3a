"""Send one payment to the payments topic with aiokafka (no kcat needed).

    source .cache/demo.env                          # while `make demo` runs: FRAUD_BROKER
    .venv/bin/python examples/produce_payment.py    # examples/payment.json, as a new payment
    .venv/bin/python examples/produce_payment.py my-payment.json --as-is   # bytes unchanged

Each run sends a new payment: ``ts`` becomes now and ``txn_id`` gets a random suffix (a
``txn_id`` seen again with other content is dead-lettered as ``conflicting_txn_id``).
``--as-is`` sends the file's bytes exactly, e.g. to see a bad payment dead-lettered. The
record's key is the payment's ``card_id``, as the workers expect. Reads FRAUD_BROKER
(``kafka://host:port``) and FRAUD_TOPIC_PAYMENTS (default ``payments.raw``); plaintext
Kafka only (the app's clients add TLS and SASL: app/worker/kafka_security.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

EXAMPLE = Path(__file__).resolve().parent / "payment.json"


def bootstrap_servers(broker: str) -> str:
    """FRAUD_BROKER's ``kafka://host:port[;kafka://host:port]`` as aiokafka's ``host:port,...``."""
    return ",".join(url.strip().split("://", 1)[-1] for url in broker.split(";") if url.strip())


def as_new_payment(payment: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """``payment`` dated now (ISO 8601 in UTC, with its zone) under a ``txn_id`` of its own."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return {
        **payment,
        "txn_id": f"{payment['txn_id']}_{secrets.token_hex(4)}",
        "ts": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


def record(raw: bytes, as_is: bool) -> tuple[bytes | None, bytes, str]:
    """The Kafka key and value for the file's bytes ``raw``, and what to call the payment."""
    try:
        # parse_float=Decimal: an amount written as a JSON number stays exact.
        payment = json.loads(raw, parse_float=Decimal)
    except ValueError:
        if not as_is:
            raise
        return None, raw, "a record that is not JSON"
    if not isinstance(payment, dict) or "card_id" not in payment:
        if not as_is:
            raise ValueError("not a JSON object with a card_id")
        return None, raw, "a record without a card_id"
    if not as_is:
        payment = as_new_payment(payment)
        # A Decimal amount goes out as a decimal string, which the workers read the same.
        raw = json.dumps(payment, default=str).encode()
    # The card's token is the key: the workers keep each card's state on one partition.
    return str(payment["card_id"]).encode(), raw, str(payment.get("txn_id"))


async def send(servers: str, topic: str, key: bytes | None, value: bytes) -> Any:
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all")
    await producer.start()
    try:
        return await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Send one payment to Kafka.")
    parser.add_argument("file", nargs="?", type=Path, default=EXAMPLE, help="a payment (JSON)")
    parser.add_argument("--as-is", action="store_true", help="send the file's bytes unchanged")
    args = parser.parse_args(argv)
    broker = os.environ.get("FRAUD_BROKER")
    if not broker:
        sys.exit("FRAUD_BROKER is not set: `source .cache/demo.env` while `make demo` runs")
    topic = os.environ.get("FRAUD_TOPIC_PAYMENTS") or "payments.raw"
    try:
        raw = args.file.read_bytes()
    except OSError as exc:
        sys.exit(f"cannot read {args.file}: {exc.strerror}")
    try:
        key, value, name = record(raw, args.as_is)
    except ValueError as exc:
        sys.exit(f"{args.file}: {exc} (--as-is sends it anyway)")
    try:
        sent = asyncio.run(send(bootstrap_servers(broker), topic, key, value))
    except KafkaError as exc:
        sys.exit(f"cannot send to Kafka at {broker} (FRAUD_BROKER): {exc}")
    print(f"sent {name} to {topic} partition {sent.partition} offset {sent.offset}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

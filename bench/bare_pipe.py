"""The ceiling: a bare aiokafka consume -> JSON decode -> produce pipe, no Faust.

Run as ``python -m bench.bare_pipe BOOTSTRAP IN_TOPIC OUT_TOPIC COUNT``; prints one JSON
line with its latency histogram after COUNT messages.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from app.worker.stats import new_histogram, percentiles_ms


async def pipe(bootstrap: str, source: str, sink: str, count: int) -> dict[str, object]:
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=f"bare-{source}",
        auto_offset_reset="earliest",
        enable_auto_commit=True,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1)
    await consumer.start()
    await producer.start()
    histogram = new_histogram()
    seen, first, last = 0, 0.0, 0.0
    print("ready", flush=True)
    try:
        while seen < count:
            batch = await consumer.getmany(timeout_ms=100, max_records=2000)
            for messages in batch.values():
                for message in messages:
                    body = json.loads(message.value)
                    if body["amount"] and body["card_id"]:
                        now_ms = time.time() * 1000
                        histogram.record_value(max(1, int((now_ms - message.timestamp) * 1000)))
                        await producer.send(sink, message.value, key=message.key)
                    seen += 1
                    last = time.time()
                    first = first or last
        await producer.flush()
    finally:
        await consumer.stop()
        await producer.stop()
    return {
        "processed": seen,
        "first": first,
        "last": last,
        "decision_latency_ms": percentiles_ms(histogram),
    }


def main() -> None:
    bootstrap, source, sink, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    print(json.dumps(asyncio.run(pipe(bootstrap, source, sink, count))), flush=True)


if __name__ == "__main__":
    main()

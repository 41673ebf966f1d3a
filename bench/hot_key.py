"""A hot key under load: one device receives 100 000 payments within its rule's window while
10 000 payments/s flow on other cards.

``python -m bench.hot_key`` starts real Kafka (4 partitions) and one worker with the shipped
default rules (``device-many-cards`` counts distinct cards per device over an hour), then
offers, side by side for ``--duration`` seconds: the generator's payments at ``--rate``/s,
and ``--hot`` payments of one card at one device with MCC 7995, their event times spread
over the hour behind now (one distinct card: the rule never fires, so before the key
bound every one of them stayed in the device's pool). Meanwhile ``/healthz`` is asked
every 250 ms. Reported: whether the worker kept up, decision and alert latency, the slowest
``/healthz`` answer, and how many events the hot key forgot at its bound. Raw numbers go to
``bench/results/hot_key.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from app.detection.models import Payment, iso_from_ms
from app.worker.stats import percentiles_ms
from bench.pipeline import (
    ARCHIVE,
    DEFAULT_RULES,
    PARTITIONS,
    RESULTS,
    WARM_UP,
    Run,
    alert_latency,
    decided,
    difference,
    merged_latency,
    offer,
    payloads_for,
    workers,
)
from infra.local.stack import LocalStack

HOT_WINDOW_MS = 3_590_000  # the hot key's event times: the hour behind now, all in its window


def hot_payloads(count: int, end_ms: int) -> list[tuple[bytes, bytes]]:
    step = HOT_WINDOW_MS / count
    return [
        (
            b"tok_hot_card",
            Payment(
                txn_id=f"hot-{i}",
                card_id="tok_hot_card",
                account_id="acct_hot",
                amount=Decimal("20.00"),
                currency="USD",
                merchant_id="m_casino",
                mcc="7995",
                country="US",
                device_id="unknown",
                ip="10.0.0.1",
                ts=iso_from_ms(ts_ms := end_ms - HOT_WINDOW_MS + int(i * step)),
                ts_ms=ts_ms,
            ).to_json(),
        )
        for i in range(count)
    ]


@dataclass
class HealthProbe:
    """Asks /healthz every 250 ms in a thread; keeps the slowest answer and any failure."""

    port: int
    slowest_s: float = 0.0
    asked: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        url = f"http://127.0.0.1:{self.port}/healthz"
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    response.read()
            except urllib.error.HTTPError as exc:
                self.failures.append(f"HTTP {exc.code} after {self.asked} probes")
            except OSError as exc:
                self.failures.append(f"{type(exc).__name__} after {self.asked} probes")
            self.slowest_s = max(self.slowest_s, time.monotonic() - started)
            self.asked += 1
            self.stop.wait(0.25)


def run_hot_key(
    stack: LocalStack, rate: int, duration: float, hot: int, workdir: Path
) -> dict[str, Any]:
    run = Run(stack, f"hot-{rate}-{time.time_ns()}", DEFAULT_RULES)
    run.create()
    normal_count = int(rate * duration)
    now_ms = int(time.time() * 1000)
    normal = payloads_for(normal_count + WARM_UP)
    hot_records = hot_payloads(hot, now_ms)
    every = max(1, normal_count // hot)
    measured: list[tuple[bytes, bytes]] = []
    hot_iter = iter(hot_records)
    for index, record in enumerate(normal[WARM_UP:]):
        measured.append(record)
        if index % every == 0:
            measured.extend(h for h in [next(hot_iter, None)] if h is not None)
    measured.extend(hot_iter)
    total = len(measured)
    topic = run.topics["FRAUD_TOPIC_PAYMENTS"]
    with workers(run, 1, workdir) as started:
        ((port, _),) = started
        time.sleep(6)
        asyncio.run(offer(stack.bootstrap, topic, normal[:WARM_UP], 1000))
        while decided([port])[0] < WARM_UP:
            time.sleep(0.1)
        before = merged_latency(decided([port])[1])
        probe = HealthProbe(port)
        thread = threading.Thread(target=probe.run, daemon=True)
        thread.start()
        began = asyncio.run(offer(stack.bootstrap, topic, measured, total / duration))
        offered_for = time.time() - began
        deadline = time.time() + duration * 10 + 60
        done, finished = 0, began
        snapshots: list[dict[str, Any]] = []
        while time.time() < deadline:
            done, snapshots = decided([port])
            done -= WARM_UP
            finished = time.time()
            if done >= total:
                break
            time.sleep(0.2)
        probe.stop.set()
        thread.join(10)
    latency = difference(merged_latency(snapshots), before)
    alerts = asyncio.run(
        alert_latency(stack.bootstrap, run.topics["FRAUD_TOPIC_ALERTS"], int(began * 1000))
    )
    (snapshot,) = snapshots
    return {
        "offered_per_s": round(total / duration),
        "normal_per_s": rate,
        "hot_payments": hot,
        "count": total,
        "decided": done,
        "offered_s": round(offered_for, 1),
        # Kept up: everything decided within a few seconds of the last payment offered.
        "drained_s_after_offer": round(finished - began - offered_for, 1),
        "latency_ms": percentiles_ms(latency),
        "alert_latency_ms": percentiles_ms(alerts),
        "healthz_probes": probe.asked,
        "healthz_slowest_s": round(probe.slowest_s, 3),
        "healthz_failures": probe.failures[:10],
        "key_events_evicted": snapshot.get("key_events_evicted"),
    }


def table(row: dict[str, Any]) -> str:
    lat, alert = row["latency_ms"], row["alert_latency_ms"]
    return "\n".join(
        [
            "| offered/s (hot) | decided | drained after offer s | decision p50 / p99 / max ms"
            " | alert p50 / p99 ms | /healthz slowest s (probes, failures) | evicted |",
            "|---|---:|---:|---|---|---|---:|",
            f"| {row['offered_per_s']} ({row['hot_payments']} hot) | {row['decided']}"
            f" / {row['count']} | {row['drained_s_after_offer']}"
            f" | {lat['p50']:.1f} / {lat['p99']:.1f} / {lat['max']:.1f}"
            f" | {alert['p50']:.1f} / {alert['p99']:.1f}"
            f" | {row['healthz_slowest_s']} ({row['healthz_probes']},"
            f" {len(row['healthz_failures'])}) | {row['key_events_evicted']} |",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hot_key", description=__doc__)
    parser.add_argument("--rate", type=int, default=10_000, help="other cards' payments/s")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds offered")
    parser.add_argument("--hot", type=int, default=100_000, help="payments on the hot key")
    parser.add_argument("--repeat", type=int, default=3, help="runs (this machine is noisy)")
    parser.add_argument("--output", type=Path, default=RESULTS / "hot_key.json")
    parser.add_argument(
        "--no-archive", action="store_true", help="workers run without the archive (on as shipped)"
    )
    args = parser.parse_args(argv)
    ARCHIVE[0] = not args.no_archive
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="fraud-bench-hot-"))
    print(f"worker logs in {tmp}", flush=True)
    rows = []
    with LocalStack(kafka=True, dynamodb=False, partitions=PARTITIONS) as stack:
        for _ in range(args.repeat):
            rows.append(run_hot_key(stack, args.rate, args.duration, args.hot, tmp))
            print(table(rows[-1]).splitlines()[-1], flush=True)
    report = {
        "cores": os.cpu_count(),
        "partitions": PARTITIONS,
        "archive": not args.no_archive,
        "runs": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    print(f"\n{os.cpu_count()} cores, {PARTITIONS} partitions, broker on the same machine\n")
    print("\n".join([*table(rows[0]).splitlines()[:2], *(table(r).splitlines()[-1] for r in rows)]))


if __name__ == "__main__":
    main()

"""How fast a rule is backtested: N generated payments archived as the archive agent
writes them (Parquet, one file per partition roll and event hour), then the seed rule and
the default rules replayed on them. Prints a table; keeps the JSON in
bench/results/backtest.json.

    python -m bench.backtest [--payments 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app.detection.rules import SEED_RULE
from app.generator import PaymentGenerator
from app.history.backtest import backtest
from app.history.files import Archive
from app.history.rolling import PartitionBuffer
from app.rules_admin.topic import load_rule_file

PARTITIONS = 4
ROLL_RECORDS = 100_000
RESULTS = Path(__file__).parent / "results" / "backtest.json"
DEFAULT_RULES = Path(__file__).parents[1] / "app" / "rules_admin" / "default_rules.yaml"


def write_archive(root: Path, count: int, start_ms: int) -> tuple[Archive, float]:
    archive = Archive.at(str(root))
    generator = PaymentGenerator(seed=5, cards=20_000, fraud_ratio=0.005)
    buffers = {
        p: PartitionBuffer("payments", 10**12, 1e9, time.monotonic, partition=p)
        for p in range(PARTITIONS)
    }
    offsets = dict.fromkeys(buffers, 0)
    started = time.perf_counter()
    for payment, _ in generator.stream(count, start_ms=start_ms, step_ms=5):
        partition = hash(payment.card_id) % PARTITIONS
        key = payment.card_id.encode()
        buffers[partition].add(offsets[partition], payment.ts_ms, key, payment.to_json())
        offsets[partition] += 1
        if offsets[partition] % ROLL_RECORDS == 0:
            roll(archive, partition, buffers[partition])
    for partition, buffer in buffers.items():
        if not buffer.empty:
            roll(archive, partition, buffer)
    return archive, time.perf_counter() - started


def roll(archive: Archive, partition: int, buffer: PartitionBuffer) -> None:
    files, _ = buffer.roll()
    for f in files:
        path = archive.file_path(f.kind, f.date, f.hour, "payments.raw", partition, f.first, f.last)
        archive.write(path, f.table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--payments", type=int, default=1_000_000)
    args = parser.parse_args()
    start = datetime(2026, 11, 20, tzinfo=UTC)
    rules = [
        SEED_RULE,
        *[r for r in load_rule_file(DEFAULT_RULES) if r.rule_id != SEED_RULE.rule_id],
    ]
    rows = []
    with tempfile.TemporaryDirectory(prefix="backtest-bench-") as tmp:
        archive, write_s = write_archive(Path(tmp), args.payments, int(start.timestamp() * 1000))
        size = sum(f.stat().st_size for f in Path(tmp).rglob("*.parquet"))
        print(
            f"archived {args.payments} payments in {write_s:.1f} s ({size / 1e6:.0f} MB of Parquet)"
        )
        for rule in rules:
            report = backtest(archive, rule, start, start + timedelta(days=30), 60_000)
            rows.append(
                {
                    "rule": rule.rule_id,
                    "group_by": rule.group_by_name,
                    "payments": report.payments,
                    "alerts": len(report.alerts),
                    "seconds": round(report.seconds, 2),
                    "payments_per_second": round(report.payments / report.seconds),
                }
            )
    header = ("rule", "group by", "payments", "alerts", "seconds", "payments/s")
    print("\n{:28} {:18} {:>9} {:>7} {:>8} {:>11}".format(*header))
    for row in rows:
        print(
            f"{row['rule']:28} {row['group_by']:18} {row['payments']:>9} {row['alerts']:>7}"
            f" {row['seconds']:>8} {row['payments_per_second']:>11}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "cores": os.cpu_count(),
                "payments": args.payments,
                "archive_write_seconds": round(write_s, 1),
                "parquet_bytes": size,
                "rules": rows,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()

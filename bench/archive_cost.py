"""What the Parquet archive costs: its CPU seconds per 100 000 payments, alone in a process.

    python -m bench.archive_cost [--payments 400000] [--repeat 3] [--rate 1000 --duration 30]

Real Kafka (4 partitions), payments from ``app.generator`` keyed by card as producers key
them. Each run starts a fresh process that runs only the archive's consumer loop
(``agents.archive``: the consumer, ``archive_once``, the rolls, the files), in a group and
an archive directory of its own, and reports that process's CPU seconds (user + system, all
threads, ``time.process_time``) from its consumer's start until every record is read and
written to Parquet, per 100 000 payments.

* backlog (the default): the payments are produced once before the runs; the archive reads
  them as fast as it can, as a worker catching up does.
* ``--rate``: the payments are offered at that rate for ``--duration`` seconds while the
  archive runs, so its idle wake-ups between records count too, as in a live worker.

Other processes share the machine's cores: CPU seconds are less sensitive to that than wall
time, but repeat (``--repeat``) and read the range. Results go to
``bench/results/archive_cost.json``. ``--compare DIR`` alternates the runs between this
checkout's code and another's (``DIR``, a checkout of another commit, run with this one's
Python environment), on the same backlog, and reports each one's median (kept apart from
this code's own runs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.pipeline import PARTITIONS, SEED_RULES, Run, offer, payloads_for
from infra.local.stack import LocalStack, Topic

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "archive_cost.json"


def start_child(
    stack: LocalStack,
    topics: dict[str, str],
    group: str,
    workdir: Path,
    expect: int,
    profile: Path | None,
    code: Path = REPO,
) -> subprocess.Popen[str]:
    """The archive's loop in a process of its own, with the code of the checkout ``code``
    (under py-spy, all threads sampled into ``profile``/<group>.txt, when given)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(code),
        **stack.env(),
        **topics,
        "FRAUD_APP_ID": group,
        "FRAUD_PARTITIONS": str(PARTITIONS),
        "FRAUD_DATADIR": str(workdir / f"{group}-data"),
        "FRAUD_ARCHIVE_URL": str(workdir / f"{group}-archive"),
    }
    command = [sys.executable, "-m", "bench.archive_loop", str(expect)]
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        spy = str(Path(sys.executable).parent / "py-spy")
        output = str(profile / f"{group}.txt")
        command = [spy, "record", "--format", "raw", "--rate", "200", "-o", output, "--", *command]
    return subprocess.Popen(
        command,
        cwd=code,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def result_of(process: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, _ = process.communicate(timeout=timeout)
    if process.returncode != 0:
        raise RuntimeError(f"the archive process failed ({process.returncode})")
    last = [line for line in out.splitlines() if line.startswith("{")][-1]
    result: dict[str, Any] = json.loads(last)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=400_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rate", type=int, default=None, help="offer live at this rate/s")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds, with --rate")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy each run into DIR")
    parser.add_argument(
        "--compare", type=Path, default=None, help="every other run with the code at DIR"
    )
    args = parser.parse_args(argv)
    runs: list[dict[str, Any]] = []
    with (
        LocalStack(kafka=True, dynamodb=False, partitions=PARTITIONS) as stack,
        tempfile.TemporaryDirectory(prefix="archive-cost-") as tmp,
    ):
        workdir = Path(tmp)
        uid = f"archive-cost-{int(time.time())}"
        count = args.payments if args.rate is None else int(args.rate * args.duration)
        payloads = payloads_for(count)
        for index in range(args.repeat):
            # A backlog is produced once and read by every run (each in a group of its own);
            # a live run offers its payments to fresh topics while the archive reads them.
            if index == 0 or args.rate is not None:
                topics = Run(stack, f"{uid}-{index}", SEED_RULES).topics
                stack.create_topics([Topic(name, PARTITIONS) for name in topics.values()])
                if args.rate is None:
                    asyncio.run(
                        offer(stack.bootstrap, topics["FRAUD_TOPIC_PAYMENTS"], payloads, None)
                    )
            code = REPO if args.compare is None or index % 2 == 0 else args.compare.resolve()
            group = f"{uid}-run{index}"
            process = start_child(stack, topics, group, workdir, count, args.profile, code)
            if args.rate is not None:
                time.sleep(5)  # the process imports the app and joins its group
                asyncio.run(
                    offer(stack.bootstrap, topics["FRAUD_TOPIC_PAYMENTS"], payloads, args.rate)
                )
            result = result_of(process, timeout=600)
            result["load"] = round(os.getloadavg()[0], 1)
            result["mode"] = "backlog" if args.rate is None else f"{args.rate}/s"
            result["code"] = "this" if code == REPO else str(code)
            runs.append(result)
            print(
                f"run {index + 1} ({result['code']}): {result['records']} records,"
                f" {result['rows']} rows,"
                f" {result['files']} files, {result['cpu_s']} CPU-s in {result['wall_s']} s:"
                f" {result['cpu_s_per_100k']} CPU-s per 100k"
                f" (CPU-s and page faults by thread: {result['threads']},"
                f" system {result['system_cpu_s']}, {result['page_faults']} page faults,"
                f" load average {result['load']})",
                flush=True,
            )
    for code_name in sorted({r["code"] for r in runs}):
        per_100k = sorted(r["cpu_s_per_100k"] for r in runs if r["code"] == code_name)
        median = per_100k[len(per_100k) // 2]
        print(
            f"CPU-s per 100k ({code_name}): min {per_100k[0]}, median {median}, max {per_100k[-1]}"
        )
    if args.profile is not None:
        return  # py-spy slows the runs: their numbers are not kept
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    kept = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    compared = "" if args.compare is None else f", alternating with {args.compare}"
    kept[runs[0]["mode"] + compared] = runs
    RESULTS.write_text(json.dumps(kept, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""The demo's stand-in analysts and chargebacks: the generator's truth decides.

``faust -A app generate --truth FILE`` writes each injected fraud (its payments) as a JSON
line when it starts it. This process follows that file and, against the demo's worker:

- closes each open case once it has been open ``ANALYST_DELAY_S``, over the cases API as an
  analyst would (``POST /cases/{id}/close``, which publishes the label): ``fraud`` if any of
  its payments is injected fraud, else ``not_fraud``, by ``demo-analyst``;
- every ``CHARGEBACK_EVERY_S``, imports as chargebacks the injected fraud payments older than
  ``CHARGEBACK_DELAY_S`` that no case it closed called fraud (the fraud the rules missed, or
  whose case someone else closed): a CSV in the demo's logs directory, read by the same
  parser as ``faust -A app labels import`` and published to the labels topic.

So after a few minutes of ``make demo`` the dashboard's outcomes show each rule's precision
and recall. It keeps the truth of the last ``KEEP_S`` only (a few hundred payments at the
demo's rates). ``python -m infra.local.analyst --help``; the token is read from
``FRAUD_API_TOKEN``, the broker and labels topic from the worker's settings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.cases.labels import parse_chargebacks, publish_labels
from app.detection.models import ms_from_iso
from app.rules_admin.topic import bootstrap_servers
from app.worker.settings import load_settings

log = logging.getLogger("demo-analyst")

ANALYST = "demo-analyst"
ANALYST_DELAY_S = 15.0  # a case waits this long for its analyst
CHARGEBACK_DELAY_S = 120.0  # a fraud payment is charged back this long after it
CHARGEBACK_EVERY_S = 30.0
KEEP_S = 600.0  # the truth kept, by the fraud's last payment
POLL_S = 5.0


@dataclass
class Truth:
    """The injected fraud of the last ``KEEP_S``, as the generator's truth files say (the
    live generator's, and the demo's backfill: ``also``)."""

    path: Path
    also: tuple[Path, ...] = ()
    # txn id -> event time (ms) of its fraud's last payment
    fraud: dict[str, int] = field(default_factory=dict)
    # txn ids a case closed as fraud, or already charged back: no chargeback (more)
    labelled: set[str] = field(default_factory=set)
    _offsets: dict[Path, int] = field(default_factory=dict)

    def follow(self) -> None:
        """Read the lines written since the last call (a half-written one waits)."""
        for path in (self.path, *self.also):
            offset = self._offsets.get(path, 0)
            try:
                with path.open("rb") as truth:
                    truth.seek(offset)
                    data = truth.read()
            except FileNotFoundError:
                continue
            complete = data[: data.rfind(b"\n") + 1]
            self._offsets[path] = offset + len(complete)
            self.add(complete.decode().splitlines(), int(time.time() * 1000))

    def add(self, lines: Iterable[str], now_ms: int = 0) -> None:
        """Learn the fraud of these truth lines; a genuine pattern (``fraud`` false) is not
        fraud. A fraud is dated by when it is complete (an absence: its deadline) or when it
        is learnt (``now_ms``), the later: a backfill's fraud, an hour old, waits for its
        alerts and cases as live fraud does."""
        for line in lines:
            fraud = json.loads(line)
            if not fraud.get("fraud", True):
                continue
            last_ms = max(ms_from_iso(fraud["last_ts"]) or int(time.time() * 1000), now_ms)
            for txn_id in fraud["txn_ids"]:
                self.fraud[txn_id] = last_ms

    def disposition(self, case: dict[str, Any]) -> str:
        return "fraud" if any(t in self.fraud for t in case["txn_ids"]) else "not_fraud"

    def closed(self, case: dict[str, Any], disposition: str) -> None:
        if disposition == "fraud":
            self.labelled.update(t for t in case["txn_ids"] if t in self.fraud)

    def chargebacks(self, now_ms: int) -> list[str]:
        """The fraud payments due a chargeback at ``now_ms`` (``charged`` once published);
        forgets what is older than ``KEEP_S``."""
        due = [
            txn_id
            for txn_id, last_ms in self.fraud.items()
            if now_ms - last_ms >= CHARGEBACK_DELAY_S * 1000 and txn_id not in self.labelled
        ]
        for txn_id in [t for t, last_ms in self.fraud.items() if now_ms - last_ms > KEEP_S * 1000]:
            del self.fraud[txn_id]
            self.labelled.discard(txn_id)
        return [txn_id for txn_id in due if txn_id in self.fraud]

    def charged(self, txn_ids: Iterable[str]) -> None:
        self.labelled.update(t for t in txn_ids if t in self.fraud)


def due_for_review(case: dict[str, Any], now: datetime) -> bool:
    opened = datetime.fromisoformat(case["opened_at"])
    return (now - opened).total_seconds() >= ANALYST_DELAY_S


def chargeback_csv(txn_ids: list[str], today: str) -> str:
    lines = [f"{txn_id},{today},fraud injected by the demo's generator" for txn_id in txn_ids]
    return "\n".join(["txn_id,date,reason", *lines]) + "\n"


def _call(method: str, url: str, token: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


class Analyst:
    def __init__(self, truth: Truth, web_url: str, token: str, out: Path) -> None:
        self.truth, self.web_url, self.token, self.out = truth, web_url, token, out
        settings = load_settings()
        self.bootstrap = bootstrap_servers(settings.broker)
        self.topic = settings.topic_labels
        self.closed = 0
        self.charged_back = 0

    def review(self) -> None:
        """Close the open cases due for review, by the truth."""
        now = datetime.now(UTC)
        found = _call("GET", f"{self.web_url}/cases?status=open&limit=500", self.token)
        for case in found["cases"]:
            if not due_for_review(case, now):
                continue
            disposition = self.truth.disposition(case)
            note = f"generator truth: {'injected fraud' if disposition == 'fraud' else 'genuine'}"
            body = {"disposition": disposition, "note": note, "closed_by": ANALYST}
            try:
                _call("POST", f"{self.web_url}/cases/{case['case_id']}/close", self.token, body)
            except urllib.error.HTTPError as exc:
                if exc.code != 409:  # 409: someone closed it first
                    raise
                continue
            self.truth.closed(case, disposition)
            self.closed += 1
            log.info("closed case %s as %s (%s)", case["case_id"], disposition, case["rule_id"])

    async def charge_back(self) -> None:
        due = self.truth.chargebacks(int(time.time() * 1000))
        if not due:
            return
        today = datetime.now(UTC).date().isoformat()
        path = self.out / f"chargebacks-{int(time.time())}.csv"
        path.write_text(chargeback_csv(due, today), encoding="utf-8")
        labels = parse_chargebacks(path.read_text(encoding="utf-8"))
        await publish_labels(self.bootstrap, self.topic, labels)
        self.truth.charged(due)
        self.charged_back += len(labels)
        log.info("imported %d chargebacks from %s", len(labels), path)

    async def run(self) -> None:
        last_chargebacks = time.monotonic()
        while True:
            try:
                self.truth.follow()
                await asyncio.to_thread(self.review)
                if time.monotonic() - last_chargebacks >= CHARGEBACK_EVERY_S:
                    await self.charge_back()
                    last_chargebacks = time.monotonic()
            except Exception as exc:  # the worker or Kafka not up yet, or restarting
                log.warning("will try again: %r", exc)
            await asyncio.sleep(POLL_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local.analyst", description=__doc__)
    parser.add_argument(
        "--truth",
        type=Path,
        action="append",
        required=True,
        help="the generator's truth file (again for more: the demo's backfill)",
    )
    parser.add_argument("--web", required=True, help="the worker's web URL")
    parser.add_argument("--out", type=Path, required=True, help="where to write chargebacks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    token = os.environ.get("FRAUD_API_TOKEN", "")
    if not token:
        parser.error("FRAUD_API_TOKEN must be set: closing a case needs it")
    args.out.mkdir(parents=True, exist_ok=True)
    first, *also = args.truth
    analyst = Analyst(Truth(first, tuple(also)), args.web.rstrip("/"), token, args.out)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(analyst.run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

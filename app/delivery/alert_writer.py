"""The DynamoDB alert writer: every alert becomes one row, written once.

Batching. Up to ``BATCH_SIZE`` (25) alerts are taken from the stream at a time and
written as 25 *conditional* ``PutItem`` calls issued concurrently, not as one
``BatchWriteItem``. ``BatchWriteItem`` accepts no condition expression: a replayed
alert (at-least-once delivery, a restarted worker, a rebalance) would overwrite its
row, which changes ``detected_at``/``written_at_ms``/``expires_at`` and makes the
table's stream emit a MODIFY record for an alert that was already announced. With
``attribute_not_exists(alert_id)`` a replay fails the condition instead, which the
sink counts as success ("already written"): nothing in the table changes and the
stream stays quiet. 25 concurrent puts cost the same write units as one batch of 25
and about the same wall time (one round trip), and each failure is per alert, so
only the failed alerts are retried rather than a batch's ``UnprocessedItems``.

Failures. boto3 is synchronous, so every call runs in a bounded thread pool and the
event loop never blocks on DynamoDB. botocore's own retries are off: this module
retries every failed alert itself, forever, with exponential backoff and full jitter
capped at ``BACKOFF_CAP_S``, logging each retry round with counts and error codes.
Throttling, 5xx, connection errors and timeouts are expected to heal by themselves;
validation, missing table, credentials and permission errors are logged at ERROR and
make the sink unhealthy at once, but are retried too (an operator can fix all of them,
and dropping the alert would be worse). :func:`sink_healthy` turns false when the
oldest unwritten alert has been failing for more than ``UNHEALTHY_AFTER_S``. While the
sink retries, its partitions' offsets do not move, so a crash or restart in an outage
loses nothing. A record that does not decode as an alert can never be written; it goes
to the DLQ topic (reason ``alert_undecodable``) with its original bytes and is acked
once the DLQ has it.

Cases. With a cases table (``FRAUD_CASES_ENABLED``), an active alert's row is written in
one transaction with its case (``app.cases.store``: it opens one, or joins the open case of
its rule and key); the row's condition is the same, so a replay is still "already written".
Shadow alerts open no case: they page nobody and no analyst reviews them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from hdrh.histogram import HdrHistogram

from app.cases.model import Role
from app.cases.store import CaseStore
from app.delivery.backoff import backoff_delay
from app.delivery.dynamodb import ErrorKind, classify_error, error_code, put_request
from app.detection.models import Alert
from app.worker.stats import new_histogram, percentiles_ms

log = logging.getLogger(__name__)

WRITE_THREADS = 25  # one thread (and one pooled HTTP connection) per put of a full batch
BACKOFF_BASE_S = 0.05
BACKOFF_CAP_S = 10.0
UNHEALTHY_AFTER_S = 30.0
_HIGHEST_LATENCY_US = 600_000_000  # new_histogram()'s upper bound: clamp, never raise


@dataclass
class SinkStats:
    """Counters of one worker's sink; ``snapshot()`` is what /stats and /metrics show."""

    written: int = 0  # rows created by this worker
    duplicates_skipped: int = 0  # alerts whose row already existed (replays)
    failures: int = 0  # failed PutItem calls, each retried
    throttled: int = 0  # of which DynamoDB said "slow down"
    retries: int = 0  # retry rounds (each re-issues all still-failing alerts of a batch)
    dead_lettered: int = 0  # undecodable records sent to the DLQ
    cases_opened: int = 0  # alerts that opened a case (each pages)
    cases_joined: int = 0  # alerts that joined an open case (no page)
    batches: int = 0
    last_error_at: float | None = None  # epoch seconds
    last_error: str | None = None  # an error code, never a message with data in it
    # Monotonic time of the first failure of the oldest alert not yet in the table.
    failing_since: float | None = None
    # The latest failure cannot heal by itself (validation, missing table, credentials).
    blocked: bool = False
    # True once the worker runs the sink (FRAUD_SINK_ENABLED): /stats and /metrics show it.
    enabled: bool = False
    # Alert latency: trigger payment's Kafka produce time -> its row exists (µs).
    alert_latency: HdrHistogram = field(default_factory=new_histogram)

    def record_failure(self, code: str, kind: ErrorKind, now_monotonic: float) -> None:
        self.failures += 1
        if kind is ErrorKind.THROTTLED:
            self.throttled += 1
        self.last_error_at = time.time()
        self.last_error = code
        if self.failing_since is None:
            self.failing_since = now_monotonic

    def record_written(self, written_at_s: float, produced_at_ms: int) -> None:
        self.written += 1
        latency_us = int((written_at_s * 1000 - produced_at_ms) * 1000)
        self.alert_latency.record_value(min(max(1, latency_us), _HIGHEST_LATENCY_US))

    def failing_for(self, now_monotonic: float | None = None) -> float:
        if self.failing_since is None:
            return 0.0
        now = time.monotonic() if now_monotonic is None else now_monotonic
        return now - self.failing_since

    def healthy(self, now_monotonic: float | None = None) -> bool:
        return not self.blocked and self.failing_for(now_monotonic) <= UNHEALTHY_AFTER_S

    def snapshot(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "healthy": self.healthy(),
            "written": self.written,
            "duplicates_skipped": self.duplicates_skipped,
            "failures": self.failures,
            "throttled": self.throttled,
            "retries": self.retries,
            "dead_lettered": self.dead_lettered,
            "cases_opened": self.cases_opened,
            "cases_joined": self.cases_joined,
            "batches": self.batches,
            "failing_for_s": round(self.failing_for(), 3),
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "alert_latency_ms": percentiles_ms(self.alert_latency),
            "alert_latency_hdr": self.alert_latency.encode().decode(),
        }


sink_stats = SinkStats()


def sink_healthy() -> bool:
    """False while the oldest unwritten alert has failed for over ``UNHEALTHY_AFTER_S``
    seconds, or at once when the failure needs an operator (e.g. the table is missing)."""
    return sink_stats.healthy()


def make_client(region: str, endpoint: str | None) -> Any:
    """A DynamoDB client for ``endpoint`` (real AWS in ``region`` when it is None)."""
    session = boto3.session.Session(region_name=region)
    kwargs: dict[str, Any] = {
        "config": Config(
            connect_timeout=2,
            read_timeout=10,
            # Our loop retries forever and counts and logs every round; botocore's
            # silent retries inside a call would only hide throttling from the stats.
            retries={"mode": "standard", "total_max_attempts": 1},
            max_pool_connections=WRITE_THREADS,
        )
    }
    if endpoint:
        kwargs["endpoint_url"] = endpoint
        if session.get_credentials() is None:
            # DynamoDB Local accepts any key; a laptop often has none configured.
            kwargs["aws_access_key_id"] = "local"
            kwargs["aws_secret_access_key"] = "local"
    return session.client("dynamodb", **kwargs)


def _chain_of(alert: Alert) -> tuple[str, str, str]:
    """The alerts that must be written one after another: those of one case slot (a shadow
    alert opens no case, so each is a chain of its own)."""
    if alert.status != "active":
        return (alert.alert_id, "", "")
    return (alert.rule_id, alert.group_by, alert.group_key)


@dataclass(frozen=True)
class Landed:
    """An alert's write that succeeded: when, and what it did to the cases."""

    at: float  # epoch seconds
    role: Role | None = None
    duplicate: bool = False  # its row existed already (a replay)


class AlertWriter:
    """Writes batches of alerts to the table, each exactly once, retrying until done."""

    def __init__(
        self,
        table: str,
        client_factory: Callable[[], Any],
        *,
        stats: SinkStats | None = None,
        threads: int = WRITE_THREADS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        cases_table: str | None = None,
    ) -> None:
        self.table = table
        self.cases_table = cases_table
        self._cases: CaseStore | None = None
        self.stats = sink_stats if stats is None else stats
        self._client_factory = client_factory
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._threads = threads
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._sleep = sleep

    def _executor_for_calls(self) -> concurrent.futures.ThreadPoolExecutor:
        # Created on first use: importing the module (unit tests, CLI commands) starts nothing.
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._threads, thread_name_prefix="dynamodb-sink"
            )
        return self._executor

    def _put(self, alert: Alert) -> Landed:
        """One conditional PutItem, or the transaction of an alert and its case (in a pool
        thread); when it landed and what it did to the cases."""
        if self._client is None:
            with self._client_lock:  # client creation is slow and not thread-safe
                if self._client is None:
                    self._client = self._client_factory()
                    if self.cases_table:
                        self._cases = CaseStore(self.cases_table, self.table, self._client)
        if self._cases is not None and alert.status == "active":
            role = self._cases.write_alert(alert, int(time.time() * 1000))
            return Landed(time.time(), role, duplicate=role is None)
        self._client.put_item(**put_request(self.table, alert))
        return Landed(time.time())

    async def write(self, alerts: Sequence[Alert]) -> None:
        """Return once every alert has a row (written now or before); retry forever."""
        loop = asyncio.get_running_loop()
        executor = self._executor_for_calls()
        pending: list[Alert] = []
        seen: set[str] = set()
        for alert in alerts:
            if alert.alert_id in seen:
                self.stats.duplicates_skipped += 1  # the same alert twice in one batch
            else:
                seen.add(alert.alert_id)
                pending.append(alert)
        # Its own loop on the one policy (backoff_delay), not backoff.Retry: a round
        # re-issues only the alerts that failed, not the whole operation, and its log line
        # (ERROR once a failure cannot heal by itself) counts alerts and error codes.
        attempt = 0
        while pending:
            # Alerts of one case slot (rule and key) go one after another, in one thread:
            # written at once they would only race for the slot and retry.
            chains: dict[tuple[str, str, str], list[Alert]] = {}
            for alert in pending:
                chains.setdefault(_chain_of(alert), []).append(alert)
            ordered = [alert for chain in chains.values() for alert in chain]
            chained = await asyncio.gather(
                *(loop.run_in_executor(executor, self._put_chain, c) for c in chains.values())
            )
            results = [result for chain in chained for result in chain]
            pending = ordered
            now = time.monotonic()
            failed: list[Alert] = []
            codes: Counter[str] = Counter()
            errors: list[tuple[ErrorKind, BaseException]] = []
            for alert, result in zip(pending, results, strict=True):
                if isinstance(result, Landed):
                    self._record(result, alert)
                    continue
                kind = classify_error(result)
                if kind is ErrorKind.DUPLICATE:
                    self.stats.duplicates_skipped += 1
                    continue
                code = error_code(result)
                self.stats.record_failure(code, kind, now)
                failed.append(alert)
                codes[code] += 1
                errors.append((kind, result))
            pending = failed
            if not pending:
                break
            blocked = [exc for kind, exc in errors if kind is ErrorKind.NON_RETRYABLE]
            # The error worth reading: one that will not heal by itself, if any.
            example = str(blocked[0] if blocked else errors[0][1])
            attempt += 1
            self.stats.retries += 1
            self.stats.blocked = bool(blocked)
            delay = backoff_delay(attempt, base=BACKOFF_BASE_S, cap=BACKOFF_CAP_S)
            log.log(
                logging.ERROR if self.stats.blocked else logging.WARNING,
                "dynamodb sink: %d of %d alerts not written to %s (retry round %d, failing"
                " for %.1f s, %d failed puts in all; %s): %s; retrying in %.2f s",
                len(pending),
                len(alerts),
                self.table,
                attempt,
                self.stats.failing_for(now),
                self.stats.failures,
                ", ".join(f"{code} x{n}" for code, n in codes.most_common()),
                example[:300],
                delay,
            )
            await self._sleep(delay)
        self.stats.batches += 1
        if self.stats.failing_since is not None:
            log.warning(
                "dynamodb sink: recovered; %d alerts written to %s after %d retry rounds"
                " and %.1f s of failures",
                len(alerts),
                self.table,
                attempt,
                self.stats.failing_for(),
            )
        self.stats.failing_since = None
        self.stats.blocked = False

    def _put_chain(self, alerts: Sequence[Alert]) -> list[Landed | BaseException]:
        """:meth:`_put` of each alert in turn (in a pool thread); a failure is returned."""
        results: list[Landed | BaseException] = []
        for alert in alerts:
            try:
                results.append(self._put(alert))
            except Exception as exc:
                results.append(exc)
        return results

    def _record(self, landed: Landed, alert: Alert) -> None:
        if landed.duplicate:
            self.stats.duplicates_skipped += 1
            return
        self.stats.record_written(landed.at, alert.trigger_produced_at_ms)
        if landed.role is Role.OPENED:
            self.stats.cases_opened += 1
        elif landed.role is Role.JOINED:
            self.stats.cases_joined += 1

    def close(self) -> None:
        if self._executor is not None:
            # In-flight puts finish in their threads (bounded by the client's timeouts).
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

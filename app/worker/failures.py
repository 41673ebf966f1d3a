"""What went wrong inside a worker that no input should cause, counted for health.

Two kinds, both of which make ``/healthz`` fail for a while:

* *internal errors*: an unforeseen exception while handling one record. The agent
  catches it, dead-letters the record (reason ``internal_error``) and goes on; this
  module counts it per agent and exception class, logs it at most once per class per
  minute (a poison flood must not flood the log too), and tells whether more than the
  allowed number happened within the last minute.
* *agent crashes*: an exception that escaped an agent anyway. Faust then restarts the
  agent past the record it was on; that must never look healthy.
* *refused DLQ sends*: a buffered dead letter Kafka refused after the producer's own
  retries. Its source offset is committed all the same, so each one is a record lost,
  like a crash: no threshold, one keeps ``/healthz`` failing for a minute.

Pure bookkeeping: no Faust, no settings; the clock is injectable for tests.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from app.detection.pan import redact_text_cut

log = logging.getLogger(__name__)

LOG_EVERY_S = 60.0
CRASH_MEMORY_S = 60.0  # an agent crash keeps /healthz failing this long
DLQ_FAILURE_MEMORY_S = 60.0  # so does a refused DLQ send


@dataclass
class Failures:
    max_internal_errors_per_minute: int = 10
    clock: Callable[[], float] = time.monotonic
    internal_errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    crashes: Counter[str] = field(default_factory=Counter)
    last_crash_at: float | None = None
    last_crash: str | None = None
    dlq_send_failures: int = 0
    last_dlq_send_failure_at: float | None = None
    # The newest internal errors' times: enough to tell whether the limit was passed.
    _recent: deque[float] = field(default_factory=deque)
    _logged_at: dict[str, float] = field(default_factory=dict)

    def internal_error(self, agent: str, exc: BaseException, where: str) -> None:
        """Count an unforeseen per-record error; log it unless its class was logged lately."""
        kind = type(exc).__name__
        self.internal_errors[(agent, kind)] += 1
        now = self.clock()
        self._recent.append(now)
        while len(self._recent) > self.max_internal_errors_per_minute + 1:
            self._recent.popleft()
        last = self._logged_at.get(kind)
        if last is None or now - last >= LOG_EVERY_S:
            self._logged_at[kind] = now
            # The traceback, not the record: a record may hold data that must not be logged.
            text = "".join(traceback.format_exception(exc, limit=8))
            log.error(
                "%s: unforeseen %s at %s; the record went to the DLQ as internal_error"
                " (%d of this class so far; logged at most once a minute)\n%s",
                agent,
                kind,
                where,
                sum(n for (_, k), n in self.internal_errors.items() if k == kind),
                redact_text_cut(text, slice(-4000, None)),
            )

    def internal_errors_too_many(self) -> bool:
        """More than the allowed number of internal errors within the last minute."""
        limit = self.max_internal_errors_per_minute
        return len(self._recent) > limit and self.clock() - self._recent[0] < 60.0

    def internal_errors_last_minute(self) -> int:
        now = self.clock()
        return sum(1 for t in self._recent if now - t < 60.0)

    def agent_crashed(self, agent: str, exc: BaseException) -> None:
        self.crashes[agent] += 1
        self.last_crash_at = self.clock()
        self.last_crash = f"{agent}: {type(exc).__name__}"
        log.error(
            "agent %s crashed with %s; Faust restarts it past the record it was on",
            agent,
            type(exc).__name__,
        )

    def crashed_recently(self) -> bool:
        return self.last_crash_at is not None and self.clock() - self.last_crash_at < (
            CRASH_MEMORY_S
        )

    def dlq_send_failed(self, what: str, exc: BaseException) -> None:
        self.dlq_send_failures += 1
        self.last_dlq_send_failure_at = self.clock()
        log.error("%s was not written to the DLQ: %r", what, exc)

    def dlq_sends_failing(self) -> bool:
        """A DLQ send was refused within the last minute."""
        at = self.last_dlq_send_failure_at
        return at is not None and self.clock() - at < DLQ_FAILURE_MEMORY_S


failures = Failures()

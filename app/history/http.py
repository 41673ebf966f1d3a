"""Backtests over HTTP: ``POST /rules/{id}/backtest``, the shadow-rule evidence the
dashboard shows (``GET /rules/{id}/evidence``) and every rule version's outcomes (``GET
/outcomes?days=&rule=``, app.history.outcomes). All read the archive (a week of payments
for the evidence), so all need the bearer token (``FRAUD_API_TOKEN``), like rule writes.

A backtest is seconds of pure Python: run in the worker's own process it would hold the
GIL and stall detection, so it runs in one child process. The child takes one computation
at a time, backtest or evidence alike; a request while one runs gets 429 with
Retry-After rather than a queue. Evidence is kept per rule version for a minute, and
outcomes per question, so a dashboard polling them does not recompute them.
"""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from typing import Any, TypeVar, cast

from aiohttp import web
from faust.web import Request, Response

from app.detection.rulebook import rulebook
from app.detection.rules import Rule, RuleError, parse_rule
from app.history.evidence import EVIDENCE_DAYS, rules_outcomes, run_backtest, shadow_evidence
from app.rules_admin.http import RulesApiView, token_ok
from app.web.params import BadParameter, bad_request, only, parse_int, parse_rule_id, single
from app.worker.faust_app import app, settings

_BODY_LIMIT = 64 * 1024
# Evidence is recomputed at most this often per rule version (the dashboard polls it).
EVIDENCE_TTL_S = 60.0
# What a client is told to wait before the first computation has shown how long one takes.
FIRST_RETRY_AFTER_S = 5.0
# What a token-less caller is told is off.
_GUARDED = "backtests, evidence and outcomes"

T = TypeVar("T")

# Shut down by concurrent.futures at interpreter exit, with the worker.
_pool: ProcessPoolExecutor | None = None
# (rule id, version) -> (monotonic time computed, evidence)
_evidence: dict[tuple[str, int], tuple[float, dict[str, Any]]] = {}
# (days, rule id or "") -> (monotonic time computed, outcomes); at most a minute's questions
_outcomes: dict[tuple[int, str], tuple[float, dict[str, Any]]] = {}
OUTCOMES_MAX_DAYS = 31


def _executor() -> ProcessPoolExecutor:
    global _pool  # noqa: PLW0603 - one child process for the worker's lifetime, made on first use
    if _pool is None:
        # spawn: a forked child would inherit the worker's threads and sockets.
        _pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    return _pool


def _drop_pool() -> None:
    """Forget a pool whose child died (killed for memory, say): a broken pool refuses
    every later call, so the next computation starts a new child instead."""
    global _pool  # noqa: PLW0603 - see _executor
    if _pool is not None:
        _pool.shutdown(wait=False)
        _pool = None


class Busy(Exception):
    """The child is computing; try again in ``retry_after_s`` seconds."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"busy for about {retry_after_s} s")
        self.retry_after_s = retry_after_s


class OneAtATime:
    """The worker's one archive computation, in its child process.

    The slot is held by the computation, not by the request that asked for it: a client
    that gives up does not stop the child, so letting the next request in then would
    queue work in the pool behind it, without bound.
    """

    def __init__(self, executor: Callable[[], Executor] = _executor) -> None:
        self.executor = executor
        self.running: asyncio.Future[Any] | None = None
        self.started = 0.0
        self.last_s = FIRST_RETRY_AFTER_S

    def retry_after_s(self) -> int:
        """When the running computation is likely done: as long as the last one took,
        less what this one has run; at least a second."""
        return max(1, math.ceil(self.last_s - (time.monotonic() - self.started)))

    def start(self, call: Callable[[], T]) -> asyncio.Future[T]:
        """``call`` running in the child; Busy while another runs. Await it through
        ``asyncio.shield`` so a request that goes away leaves it running."""
        if self.running is not None:
            raise Busy(self.retry_after_s())
        future: asyncio.Future[T] = asyncio.get_running_loop().run_in_executor(
            self.executor(), call
        )
        self.running, self.started = future, time.monotonic()
        future.add_done_callback(self._finished)
        return future

    def _finished(self, future: asyncio.Future[Any]) -> None:
        self.running = None
        self.last_s = time.monotonic() - self.started
        # The exception is retrieved here, so an abandoned failure is not logged as lost.
        if not future.cancelled() and isinstance(future.exception(), BrokenProcessPool):
            _drop_pool()


work = OneAtATime()


class ArchiveView(RulesApiView):
    def busy(self, busy: Busy) -> Response:
        response = self.problem(
            429,
            "a backtest or evidence is being computed; try again later",
            retry_after_s=busy.retry_after_s,
        )
        response.headers["Retry-After"] = str(busy.retry_after_s)
        return response

    def child_died(self) -> Response:
        response = self.problem(
            503, "the backtest process ended before its answer (out of memory?); try again"
        )
        response.headers["Retry-After"] = "1"
        return response


class BacktestView(ArchiveView):
    async def post(self, request: Request, rule_id: str) -> Response:
        if not token_ok(request):
            return self.unauthorized(_GUARDED)
        raw = await cast(web.Request, request).content.read(_BODY_LIMIT + 1)
        if len(raw) > _BODY_LIMIT:
            return self.problem(413, f"body: larger than {_BODY_LIMIT} bytes", field="body")
        asked = self.read_request(raw, rule_id)
        if isinstance(asked, Response):
            return asked
        rule, since, until = asked
        try:
            running = work.start(partial(run_backtest, settings, rule, since, until))
        except Busy as busy:
            return self.busy(busy)
        try:
            report = await asyncio.shield(running)
        except ValueError as exc:  # a bad range or an unreadable archive
            return self.problem(400, str(exc))
        except BrokenProcessPool:
            return self.child_died()
        return self.json(report)

    def read_request(self, raw: bytes, rule_id: str) -> tuple[Rule, str, str] | Response:
        """The rule (the one in force, or the body's "rule") and the range, or the
        problem naming the field."""
        try:
            body = json.loads(raw or b"{}")
        except ValueError as exc:
            return self.problem(400, f"body: not JSON: {exc}", field="body")
        if not isinstance(body, dict):
            return self.problem(400, "body: must be a JSON object", field="body")
        rule = rulebook.rules.get(rule_id)
        if "rule" in body:
            try:
                rule = parse_rule(body["rule"])
            except RuleError as exc:
                return self.problem(400, str(exc), field=exc.field)
            if rule.rule_id != rule_id:
                return self.problem(400, "rule_id: does not match the URL", field="rule_id")
        if rule is None:
            return self.problem(404, f'no rule {rule_id!r} (send one as "rule" to try it)')
        for name in ("since", "until"):
            if not isinstance(body.get(name), str):
                return self.problem(400, f'{name}: required, e.g. "2026-11-20"', field=name)
        return rule, body["since"], body["until"]


def _remember(
    key: tuple[Any, ...],
    future: asyncio.Future[dict[str, Any]],
    cache: dict[Any, tuple[float, dict[str, Any]]] | None = None,
) -> None:
    """Keep computed evidence (or outcomes), also when the request that asked has gone;
    forget what is past its time, so the cache holds no more than a minute's computations."""
    if future.cancelled() or future.exception() is not None:
        return
    kept = _evidence if cache is None else cache
    now = time.monotonic()
    for old in [k for k, (at, _) in kept.items() if now - at >= EVIDENCE_TTL_S]:
        del kept[old]
    kept[key] = (now, future.result())


async def evidence_for(rule: Rule) -> dict[str, Any]:
    """The rule version's evidence, computed at most once a minute; Busy while the child
    computes something else."""
    key = (rule.rule_id, rule.version)
    cached = _evidence.get(key)
    if cached is not None and time.monotonic() - cached[0] < EVIDENCE_TTL_S:
        return cached[1]
    running = work.start(
        partial(shadow_evidence, settings, rule, rulebook.published_ms.get(rule.rule_id))
    )
    running.add_done_callback(partial(_remember, key))
    return await asyncio.shield(running)


class EvidenceView(ArchiveView):
    async def get(self, request: Request, rule_id: str) -> Response:
        if not token_ok(request):
            return self.unauthorized(_GUARDED)
        rule = rulebook.rules.get(rule_id)
        if rule is None:
            return self.problem(404, f"no rule {rule_id!r}")
        try:
            return self.json(await evidence_for(rule))
        except Busy as busy:
            return self.busy(busy)
        except ValueError as exc:
            return self.problem(503, f"no evidence: {exc}")
        except BrokenProcessPool:
            return self.child_died()


async def outcomes_for(days: int, rule_id: str | None) -> dict[str, Any]:
    """The rule versions' outcomes, computed at most once a minute per question; Busy
    while the child computes something else."""
    key = (days, rule_id or "")
    cached = _outcomes.get(key)
    if cached is not None and time.monotonic() - cached[0] < EVIDENCE_TTL_S:
        return cached[1]
    running = work.start(partial(rules_outcomes, settings, days, rule_id))
    running.add_done_callback(partial(_remember, key, cache=_outcomes))
    return await asyncio.shield(running)


class OutcomesView(ArchiveView):
    """``GET /outcomes?days=7&rule=ID``: each rule version's alerts judged by the labels."""

    async def get(self, request: Request) -> Response:
        if not token_ok(request):
            return self.unauthorized(_GUARDED)
        try:
            only(request.query, ("days", "rule"))
            days = parse_int(request.query, "days", EVIDENCE_DAYS, 1, OUTCOMES_MAX_DAYS)
            rule = single(request.query, "rule")
            rule_id = parse_rule_id(rule, "rule") if rule else None
        except BadParameter as exc:
            return bad_request(self, exc)
        try:
            return self.json(await outcomes_for(days, rule_id))
        except Busy as busy:
            return self.busy(busy)
        except ValueError as exc:
            return self.problem(503, f"no outcomes: {exc}")
        except BrokenProcessPool:
            return self.child_died()


for _path in ("/outcomes", "/outcomes/"):
    app.page(_path, name=f"OutcomesView:{_path}")(OutcomesView)
for _path in ("/rules/{rule_id}/backtest", "/rules/{rule_id}/backtest/"):
    app.page(_path, name=f"BacktestView:{_path}")(BacktestView)
for _path in ("/rules/{rule_id}/evidence", "/rules/{rule_id}/evidence/"):
    app.page(_path, name=f"EvidenceView:{_path}")(EvidenceView)

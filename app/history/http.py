"""Backtests over HTTP: ``POST /rules/{id}/backtest`` (bearer token) and the shadow-rule
evidence the dashboard shows (``GET /rules/{id}/evidence``).

A backtest is seconds of pure Python: run in the worker's own process it would hold the
GIL and stall detection, so it runs in one child process, one at a time; a second request
while one runs gets 429 rather than a queue.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from typing import Any, cast

from aiohttp import web
from faust.web import Request, Response

from app.detection.rulebook import rulebook
from app.detection.rules import Rule, RuleError, parse_rule
from app.history.evidence import run_backtest, shadow_evidence
from app.rules_admin.http import RulesApiView, token_ok
from app.worker.faust_app import app, settings

_BODY_LIMIT = 64 * 1024
# Evidence is recomputed at most this often per rule version (the dashboard polls it).
EVIDENCE_TTL_S = 60.0

# Shut down by concurrent.futures at interpreter exit, with the worker.
_pool: ProcessPoolExecutor | None = None
_busy = asyncio.Lock()
_evidence: dict[tuple[str, int], tuple[float, dict[str, Any]]] = {}


def _executor() -> ProcessPoolExecutor:
    global _pool  # noqa: PLW0603 - one child process for the worker's lifetime, made on first use
    if _pool is None:
        # spawn: a forked child would inherit the worker's threads and sockets.
        _pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    return _pool


async def _in_child(call: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(_executor(), call)


class BacktestView(RulesApiView):
    async def post(self, request: Request, rule_id: str) -> Response:
        if not token_ok(request):
            return self.unauthorized()
        raw = await cast(web.Request, request).content.read(_BODY_LIMIT + 1)
        if len(raw) > _BODY_LIMIT:
            return self.problem(413, f"body: larger than {_BODY_LIMIT} bytes", field="body")
        asked = self.read_request(raw, rule_id)
        if isinstance(asked, Response):
            return asked
        rule, since, until = asked
        if _busy.locked():
            return self.problem(429, "a backtest is running; try again when it is done")
        async with _busy:
            try:
                report = await _in_child(partial(run_backtest, settings, rule, since, until))
            except ValueError as exc:  # a bad range or an unreadable archive
                return self.problem(400, str(exc))
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


async def evidence_for(rule: Rule) -> dict[str, Any]:
    key = (rule.rule_id, rule.version)
    cached = _evidence.get(key)
    if cached is not None and time.monotonic() - cached[0] < EVIDENCE_TTL_S:
        return cached[1]
    async with _busy:
        found = await _in_child(
            partial(shadow_evidence, settings, rule, rulebook.published_ms.get(rule.rule_id))
        )
    _evidence[key] = (time.monotonic(), found)
    return cast(dict[str, Any], found)


class EvidenceView(RulesApiView):
    async def get(self, request: Request, rule_id: str) -> Response:
        rule = rulebook.rules.get(rule_id)
        if rule is None:
            return self.problem(404, f"no rule {rule_id!r}")
        try:
            return self.json(await evidence_for(rule))
        except ValueError as exc:
            return self.problem(503, f"no evidence: {exc}")


for _path in ("/rules/{rule_id}/backtest", "/rules/{rule_id}/backtest/"):
    app.page(_path, name=f"BacktestView:{_path}")(BacktestView)
for _path in ("/rules/{rule_id}/evidence", "/rules/{rule_id}/evidence/"):
    app.page(_path, name=f"EvidenceView:{_path}")(EvidenceView)

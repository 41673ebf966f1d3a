"""Cases over HTTP: list and show freely, close with ``Authorization: Bearer
$FRAUD_API_TOKEN`` (the token of the rules API).

    GET  /cases                  newest first (?status=&rule=&key=&disposition=&limit=)
    GET  /cases/{case_id}        one case, with its alert and txn ids
    POST /cases/{case_id}/close  {"disposition": ..., "note": ..., "closed_by": ...}

A close publishes the disposition's label (``app.cases.labels``) once the case is closed;
if Kafka cannot take it, the answer is a 503 and the same close again (a no-op on the case)
publishes it.

Every worker answers: cases are read from and written to the cases table, not to a
worker's state. A table that cannot be reached answers 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar, cast

from aiohttp import web
from botocore.exceptions import BotoCoreError, ClientError
from faust.web import Request, Response

from app.cases.labels import disposition_label, publish_labels
from app.cases.model import Case, CaseError, CaseFilter, parse_case_id, parse_closing
from app.cases.store import CaseStore
from app.cases.store import table_problem as store_problem
from app.delivery.alert_writer import make_client
from app.detection.models import iso_from_ms
from app.rules_admin.http import RulesApiView, token_ok
from app.rules_admin.topic import bootstrap_servers
from app.web.params import (
    BadParameter,
    bad_request,
    error,
    only,
    parse_card_id,
    parse_int,
    parse_rule_id,
    single,
)
from app.worker.faust_app import app, settings

log = logging.getLogger(__name__)

CASES_LIMIT_DEFAULT, CASES_LIMIT_MAX = 50, 500
MAX_CLOSE_BYTES = 16 * 1024
_T = TypeVar("_T")
_stores: list[CaseStore] = []
_store_lock = threading.Lock()


def case_store() -> CaseStore:
    """The worker's one client of the cases table (made on first use, in a thread)."""
    with _store_lock:
        if not _stores:
            client = make_client(settings.aws_region, settings.dynamodb_endpoint)
            _stores.append(CaseStore(settings.cases_table, settings.dynamodb_table, client))
        return _stores[0]


def table_problem(exc: BaseException) -> str:
    return store_problem(exc, settings.cases_table, settings.dynamodb_endpoint)


class Answered(Exception):
    """The store's call ended in an answer of its own (a refusal, the table down)."""

    def __init__(self, response: Response) -> None:
        super().__init__("answered")
        self.response = response


class CasesApiView(RulesApiView):
    async def call(self, work: Callable[[CaseStore], _T]) -> _T:
        """``work`` on the store in a thread; raises :class:`Answered` with a refusal as its
        status, or a failure of the table as a 503."""
        try:
            return await asyncio.to_thread(lambda: work(case_store()))
        except CaseError as exc:
            raise Answered(self.problem(exc.status, str(exc), field=exc.field)) from None
        except (ClientError, BotoCoreError) as exc:
            log.warning("cases API: %s", table_problem(exc))
            raise Answered(error(self, 503, table_problem(exc))) from None


class CasesView(CasesApiView):
    async def get(self, request: Request) -> Response:
        query = request.query
        try:
            only(query, ("status", "rule", "key", "disposition", "limit"))
            rule, key = single(query, "rule"), single(query, "key")
            wanted = CaseFilter(
                status=single(query, "status") or None,
                rule_id=parse_rule_id(rule, "rule") if rule else None,
                group_key=parse_card_id(key, "key") if key else None,
                disposition=single(query, "disposition") or None,
                limit=parse_int(query, "limit", CASES_LIMIT_DEFAULT, 1, CASES_LIMIT_MAX),
            )
        except BadParameter as exc:
            return bad_request(self, exc)
        except CaseError as exc:
            return bad_request(self, BadParameter(_parameter(exc.field), exc.problem))
        try:
            found = await self.call(lambda store: store.list(wanted))
        except Answered as answered:
            return answered.response
        cases = [case.to_json() for case in found]
        return self.json({"cases": cases, "count": len(cases), "limit": wanted.limit})


def _parameter(field: str) -> str:
    return {"rule_id": "rule", "group_key": "key"}.get(field, field)


class CaseView(CasesApiView):
    async def get(self, request: Request, case_id: str) -> Response:
        try:
            parse_case_id(case_id)
        except CaseError as exc:
            return self.problem(400, str(exc), field=exc.field)
        try:
            found = await self.call(lambda store: store.get(case_id))
        except Answered as answered:
            return answered.response
        if found is None:
            return self.problem(404, f"no case {case_id!r}")
        return self.json(found.to_json())


class CaseCloseView(CasesApiView):
    async def post(self, request: Request, case_id: str) -> Response:
        if not token_ok(request):
            return self.unauthorized("case changes")
        http = cast(web.Request, request)  # Faust's aiohttp driver hands over aiohttp's request
        raw = await http.content.read(MAX_CLOSE_BYTES + 1)
        if len(raw) > MAX_CLOSE_BYTES:
            return self.problem(413, f"body: larger than {MAX_CLOSE_BYTES} bytes", field="body")
        try:
            parse_case_id(case_id)
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise CaseError("body", "must be a JSON object")
            closing = parse_closing(
                body.get("disposition"), body.get("note"), body.get("closed_by")
            )
        except (ValueError, RecursionError) as exc:
            if isinstance(exc, CaseError):
                return self.problem(400, str(exc), field=exc.field)
            return self.problem(400, "body: is not JSON", field="body")
        closed_at = iso_from_ms(int(time.time() * 1000))
        try:
            case, now = await self.call(lambda store: store.close(case_id, closing, closed_at))
        except Answered as answered:
            return answered.response
        try:
            await publish_disposition(case)
        except Exception as exc:  # Kafka down: the close stands, its label is owed
            log.warning("cases API: label of case %s not published: %r", case_id, exc)
            return error(
                self,
                503,
                f"case {case_id} is closed, but its label did not reach the labels topic"
                f" ({type(exc).__name__}): send the same close again",
            )
        return self.json({"closed": case.to_json(), "already": not now})


async def publish_disposition(case: Case) -> None:
    """The disposition's label to the labels topic (app.cases.labels)."""
    await publish_labels(
        bootstrap_servers(settings.broker), settings.topic_labels, [disposition_label(case)]
    )


for _path in ("/cases", "/cases/"):
    app.page(_path, name=f"CasesView:{_path}")(CasesView)
for _path in ("/cases/{case_id}", "/cases/{case_id}/"):
    app.page(_path, name=f"CaseView:{_path}")(CaseView)
for _path in ("/cases/{case_id}/close", "/cases/{case_id}/close/"):
    app.page(_path, name=f"CaseCloseView:{_path}")(CaseCloseView)

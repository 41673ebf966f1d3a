"""Lists and suppressions over HTTP: read freely, write with ``Authorization: Bearer
$FRAUD_API_TOKEN`` (the token of the rules API).

    GET    /lists                          every list entry held by this worker, and each
                                           list's name, kind and entry count (``lists``)
    GET    /lists/{list}                   one list's entries
    POST   /lists/{list}                   {"value", "until" | "for", "reason", "by"}: add
    DELETE /lists/{list}/{value}           remove an entry
    GET    /suppressions                   every suppression (?rule=, ?active=true: those in
                                           force now)
    POST   /suppressions                   {"rule_id", "key", "until" | "for", "reason", "by"}
    DELETE /suppressions/{rule_id}/{key}   remove a suppression

The GETs take ``?limit=N`` (0 to the bound): at most N entries, ``count`` still all of them
(the dashboard asks for a few; a list may hold 100 000).

Writes are validated here and published to their topic, as the CLI does: this worker's own
lists change only when its follower reads the record back (``agents.lists``).
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

from aiohttp import web
from faust.web import Request, Response

from app.detection.lists import LIST, SUPPRESSION, Entry, ListError, is_bin_list, listbook
from app.detection.pan import contains_pan
from app.lists.topic import new_entry, over_bound
from app.rules_admin.http import RulesApiView, token_ok
from app.rules_admin.topic import bootstrap_servers, publish
from app.web.params import BadParameter, bad_request, only, parse_int, parse_rule_id, single
from app.worker.faust_app import app, settings

MAX_BODY_BYTES = 8 * 1024
_TOPIC = {LIST: "topic_lists", SUPPRESSION: "topic_suppressions"}
_GUARDS = "list and suppression writes"


def _listing(entries: list[Entry], limit: int | None = None) -> dict[str, Any]:
    shown = entries if limit is None else entries[:limit]
    return {
        "loaded": listbook.loaded.is_set(),
        "entries": [e.to_json() for e in shown],
        "count": len(entries),
        "held": listbook.size(),
        "max_entries": settings.max_list_entries,
    }


def _limit(request: Request, *allowed: str) -> int | None:
    """The ``limit`` parameter (None: every entry); BadParameter names a bad one."""
    only(request.query, ("limit", *allowed))
    if single(request.query, "limit") is None:
        return None
    return parse_int(request.query, "limit", 0, 0, settings.max_list_entries)


def _lists() -> list[dict[str, Any]]:
    """Each list's name, whether it is a BIN list, and how many entries it holds."""
    return [
        {"list": name, "bin_list": is_bin_list(name), "entries": len(held)}
        for name, held in sorted(listbook.lists.items())
    ]


class ListsApiView(RulesApiView):
    async def body(self, request: Request) -> dict[str, Any] | Response:
        http = cast(web.Request, request)
        raw = await http.content.read(MAX_BODY_BYTES + 1)
        if len(raw) > MAX_BODY_BYTES:
            return self.problem(413, f"body: larger than {MAX_BODY_BYTES} bytes", field="body")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            return self.problem(400, "body: is not JSON", field="body")
        if not isinstance(body, dict):
            return self.problem(400, "body: must be a JSON object", field="body")
        return body

    async def publish_entry(self, kind: str, scope: object, body: dict[str, Any]) -> Response:
        scope_field, value_field = ("list", "value") if kind == LIST else ("rule_id", "key")
        unknown = set(body) - {scope_field, value_field, "until", "for", "reason", "by"}
        if unknown:
            return self.problem(400, f"body: unknown fields {sorted(unknown)}", field="body")
        try:
            entry = new_entry(
                kind,
                scope,
                body.get(value_field),
                until=body.get("until"),
                lasting=body.get("for"),
                reason=body.get("reason"),
                by=body.get("by"),
                now_ms=int(time.time() * 1000),
            )
        except ListError as exc:
            return self.problem(400, str(exc), field=exc.field)
        bound = over_bound(listbook, [entry], settings.max_list_entries)
        if bound is not None:
            return self.problem(409, bound, field="entries")
        topic = getattr(settings, _TOPIC[kind])
        await publish(
            bootstrap_servers(settings.broker), topic, [(entry.record_key, entry.to_bytes())]
        )
        return self.json({"published": entry.to_json()}, status=202)

    async def remove(self, kind: str, scope: str, value: str) -> Response:
        if contains_pan(value):
            field = "value" if kind == LIST else "key"
            return self.problem(400, f"{field}: looks like a card number (PAN)", field=field)
        if value not in listbook.scopes(kind).get(scope, {}):
            what = "list entry" if kind == LIST else "suppression"
            return self.problem(404, f"no {what} {scope}:{value}")
        topic = getattr(settings, _TOPIC[kind])
        await publish(bootstrap_servers(settings.broker), topic, [(f"{scope}:{value}", None)])
        return self.json({"removed": f"{scope}:{value}"}, status=202)


class ListsView(ListsApiView):
    async def get(self, request: Request) -> Response:
        try:
            limit = _limit(request)
        except BadParameter as exc:
            return bad_request(self, exc)
        if limit == 0:  # the counts alone (the dashboard's poll): no sort of every entry
            held = sum(len(entries) for entries in listbook.lists.values())
            return self.json({**_listing([]), "count": held, "lists": _lists()})
        return self.json({**_listing(listbook.entries(LIST), limit), "lists": _lists()})


class ListView(ListsApiView):
    async def get(self, request: Request, name: str) -> Response:
        try:
            limit = _limit(request)
        except BadParameter as exc:
            return bad_request(self, exc)
        return self.json(_listing(listbook.entries(LIST, name), limit))

    async def post(self, request: Request, name: str) -> Response:
        if not token_ok(request):
            return self.unauthorized(_GUARDS)
        body = await self.body(request)
        if isinstance(body, Response):
            return body
        return await self.publish_entry(LIST, name, {"list": name, **body})


class ListEntryView(ListsApiView):
    async def delete(self, request: Request, name: str, value: str) -> Response:
        if not token_ok(request):
            return self.unauthorized(_GUARDS)
        return await self.remove(LIST, name, value)


class SuppressionsView(ListsApiView):
    async def get(self, request: Request) -> Response:
        try:
            limit = _limit(request, "rule", "active")
            rule = single(request.query, "rule")
            rule_id = parse_rule_id(rule, "rule") if rule else None
            active = single(request.query, "active")
            if active not in (None, "true", "false"):
                raise BadParameter("active", "must be true or false")
        except BadParameter as exc:
            return bad_request(self, exc)
        entries = listbook.entries(SUPPRESSION, rule_id)
        if active == "true":
            # In force now, by the wall clock (an entry is judged by payments' event time).
            now_ms = int(time.time() * 1000)
            entries = [e for e in entries if e.in_force(now_ms)]
        return self.json(_listing(entries, limit))

    async def post(self, request: Request) -> Response:
        if not token_ok(request):
            return self.unauthorized(_GUARDS)
        body = await self.body(request)
        if isinstance(body, Response):
            return body
        return await self.publish_entry(SUPPRESSION, body.get("rule_id"), body)


class SuppressionView(ListsApiView):
    async def delete(self, request: Request, rule_id: str, key: str) -> Response:
        if not token_ok(request):
            return self.unauthorized(_GUARDS)
        return await self.remove(SUPPRESSION, rule_id, key)


for _view, _paths in (
    (ListsView, ("/lists",)),
    (ListView, ("/lists/{name}",)),
    (ListEntryView, ("/lists/{name}/{value}",)),
    (SuppressionsView, ("/suppressions",)),
    (SuppressionView, ("/suppressions/{rule_id}/{key}",)),
):
    for _path in _paths:
        for _twin in (_path, _path + "/"):
            app.page(_twin, name=f"{_view.__name__}:{_twin}")(_view)

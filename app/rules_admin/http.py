"""Rules over HTTP: read freely, write with ``Authorization: Bearer $FRAUD_API_TOKEN``
(the same token guards the archive's routes, app.history.http).

Writes are validated here and then published to the rules topic, exactly like
the CLI: the worker's own rules change only when it reads the topic back.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, cast

from aiohttp import web
from faust.web import Request, Response, View

from app.detection.rulebook import rulebook
from app.detection.rules import RuleError, check_retention, parse_rule, parse_rule_bytes
from app.rules_admin.topic import bootstrap_servers, publish
from app.worker.faust_app import app, settings
from app.worker.settings import state_retention_ms


def token_ok(request: Request) -> bool:
    expected = settings.api_token or ""
    given = request.headers.get("Authorization", "")
    return bool(expected) and hmac.compare_digest(given.encode(), f"Bearer {expected}".encode())


class RulesApiView(View):
    """A view of the rules API: its error bodies and its answer to a missing token."""

    def problem(self, status: int, message: str, **extra: Any) -> Response:
        return self.json({"error": message, **extra}, status=status)

    def unauthorized(self, guarded: str = "rule writes") -> Response:
        """401 for a missing or wrong token; 403 when no token is set: ``guarded`` (what
        the token guards, plural) is off."""
        if not settings.api_token:
            return self.problem(403, f"{guarded} are disabled: FRAUD_API_TOKEN is not set")
        response = self.problem(401, "missing or wrong bearer token")
        response.headers["WWW-Authenticate"] = 'Bearer realm="fraud-rules"'
        return response


class RulesView(RulesApiView):
    async def get(self, request: Request) -> Response:
        return self.json(
            {"loaded": rulebook.loaded.is_set(), "rules": [r.to_json() for r in rulebook.all()]}
        )


class RuleView(RulesApiView):
    async def get(self, request: Request, rule_id: str) -> Response:
        rule = rulebook.rules.get(rule_id)
        if rule is None:
            return self.problem(404, f"no rule {rule_id!r}")
        return self.json(rule.to_json())

    async def put(self, request: Request, rule_id: str) -> Response:
        if not token_ok(request):
            return self.unauthorized()
        limit = settings.max_rule_bytes
        http = cast(web.Request, request)  # Faust's aiohttp driver hands over aiohttp's request
        if (http.content_length or 0) > limit:
            return self.problem(
                413, f"rule: the body is larger than {limit} bytes (FRAUD_MAX_RULE_BYTES)"
            )
        raw = await http.content.read(limit + 1)
        if len(raw) > limit:
            return self.problem(
                413, f"rule: the body is larger than {limit} bytes (FRAUD_MAX_RULE_BYTES)"
            )
        try:
            body = json.loads(raw)
        except ValueError as exc:
            return self.problem(400, f"rule: body is not JSON: {exc}", field="rule")
        except RecursionError:
            return self.problem(400, "rule: body is JSON nested too deeply", field="rule")
        if isinstance(body, dict):
            body.setdefault("rule_id", rule_id)
            current = rulebook.versions.get(rule_id, 0)
            body.setdefault("version", current + 1)
        try:
            rule = parse_rule(body)
            # What the workers will refuse: a window their state retention cannot keep.
            check_retention(
                rule, state_retention_ms(settings), int(settings.allowed_lateness_s * 1000)
            )
        except RuleError as exc:
            return self.problem(400, str(exc), field=exc.field)
        if rule.rule_id != rule_id:
            return self.problem(400, "rule_id: does not match the URL", field="rule_id")
        known = rulebook.versions.get(rule_id, 0)
        if rule.version <= known:
            return self.problem(
                409, f"version: must be greater than {known}, the latest", field="version"
            )
        if rule_id not in rulebook.rules and len(rulebook.rules) >= settings.max_rules:
            return self.problem(
                409,
                f"rule: {len(rulebook.rules)} rules are in force, the limit (FRAUD_MAX_RULES)",
                field="rule",
            )
        try:
            # What the workers will do with the record: the same size limit, the same parse.
            parse_rule_bytes(rule.to_bytes(), limit)
        except RuleError as exc:
            return self.problem(413, str(exc), field=exc.field)
        await publish(
            bootstrap_servers(settings.broker), settings.topic_rules, [(rule_id, rule.to_bytes())]
        )
        return self.json({"published": rule.to_json()}, status=202)

    async def delete(self, request: Request, rule_id: str) -> Response:
        if not token_ok(request):
            return self.unauthorized()
        if rule_id not in rulebook.rules:
            return self.problem(404, f"no rule {rule_id!r}")
        await publish(bootstrap_servers(settings.broker), settings.topic_rules, [(rule_id, None)])
        return self.json({"deleted": rule_id}, status=202)


for _path in ("/rules", "/rules/"):
    app.page(_path, name=f"RulesView:{_path}")(RulesView)
for _path in ("/rules/{rule_id}", "/rules/{rule_id}/"):
    app.page(_path, name=f"RuleView:{_path}")(RuleView)

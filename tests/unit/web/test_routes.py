"""app.web.routes and the rules and archive APIs: the HTTP API page lists every route the
worker serves, with its methods, so the page cannot drift from the code."""

from __future__ import annotations

import re

from faust.web import View

import app.cases.http
import app.history.http
import app.lists.http
import app.rules_admin.http
import app.web.routes
from app.worker.faust_app import app as faust_app
from tests.docs import page, section

METHODS = ("get", "post", "put", "patch", "delete")


def served() -> set[tuple[str, str]]:
    """(method, path) of every view registered on the app, without the trailing-slash twins."""
    assert app.web.routes and app.rules_admin.http and app.history.http  # registered on import
    assert app.cases.http and app.lists.http
    found = set()
    for path, view in faust_app.web.views.items():
        for method in METHODS:
            if getattr(type(view), method) is not getattr(View, method):
                found.add((method.upper(), path.rstrip("/") or "/"))
    return found


def test_the_http_api_page_lists_every_route_and_method_the_worker_serves() -> None:
    routes = section(page("reference/http-api.md"), "Routes")
    listed = set(re.findall(r"^\| `([A-Z]+)` \| `([^`]+)` \|", routes, re.M))
    assert listed == served()

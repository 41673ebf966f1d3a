"""fraud-detection. ``faust -A app worker -l info`` starts a worker.

Importing a module of this package wires nothing: the engine (``app.detection``) reads no
setting and builds no Faust app, so a backtest, a notebook or a Lambda can use it. The
worker is wired by :func:`wire`, which Faust's ``-A app`` reaches by asking this package
for its ``app`` attribute.

Where things are, in the order data flows: ``detection`` (validation, rules, the engine),
``worker`` (the Faust app, settings, start-up checks, counters), ``delivery`` (dead letters,
published ids, DynamoDB items, backoff), ``rules_admin`` (rules topic and HTTP API),
``web`` (views, metrics, dashboard), ``cli`` (Faust commands), ``generator`` (test traffic).
Agents and tables live in the top-level ``agents`` and ``tables`` packages.
"""

from __future__ import annotations

import importlib
from typing import Any

# The modules whose Faust decorators register tables, agents, web views and CLI commands.
WIRING = (
    "tables",
    "tables.sweep",
    "agents",
    "app.cli",
    "app.rules_admin.http",
    "app.cases.http",
    "app.history.http",
    "app.web.routes",
    "agents.lists",
    "app.lists.http",
)


def wire() -> Any:
    """The Faust app with everything registered on it (idempotent)."""
    faust_app = importlib.import_module("app.worker.faust_app").app
    for module in WIRING:
        importlib.import_module(module)
    globals()["app"] = faust_app
    return faust_app


def __getattr__(name: str) -> Any:
    if name == "app":
        return wire()
    raise AttributeError(f"module 'app' has no attribute {name!r}")

"""fraud-detection. ``faust -A app worker -l info`` starts a worker.

Importing a module of this package wires nothing: ``import app.detection`` (the engine),
``app.models`` or ``app.rules`` reads no setting and builds no Faust app, so a backtest, a
notebook or a Lambda can use them. The worker is wired by :func:`wire`, which Faust's
``-A app`` reaches by asking this package for its ``app`` attribute.
"""

from __future__ import annotations

import importlib
from typing import Any

# The modules whose Faust decorators register tables, agents, web views and CLI commands.
WIRING = ("tables", "agents", "app.commands", "app.rules_api", "app.web")


def wire() -> Any:
    """The Faust app with everything registered on it (idempotent)."""
    faust_app = importlib.import_module("app.faust_app").app
    for module in WIRING:
        importlib.import_module(module)
    globals()["app"] = faust_app
    return faust_app


def __getattr__(name: str) -> Any:
    if name == "app":
        return wire()
    raise AttributeError(f"module 'app' has no attribute {name!r}")

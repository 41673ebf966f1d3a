"""fraud-detection: the Faust app. ``faust -A app worker -l info`` starts a worker."""

from app.faust_app import app

# Registering agents, tables, web views and CLI commands is a side effect of import.
import agents  # noqa: F401  isort: skip
from app import commands as _commands  # noqa: F401  isort: skip
from app import rules_api as _rules_api  # noqa: F401  isort: skip
from app import web as _web  # noqa: F401  isort: skip

__all__ = ["app"]

"""Request parameters and error answers shared by every view.

Errors are JSON objects with an ``error`` message; a bad parameter gets 400 and its
name in ``parameter``; a 503 carries ``Retry-After``. An unknown parameter is refused,
because a typo ignored silently answers a question nobody asked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from faust.web import Response, View

from app.detection.pan import contains_pan

MAX_ID_LENGTH = 128  # as app.detection.validation accepts for card_id
RULE_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # as app.detection.rules accepts for rule_id
RETRY_AFTER = {"Retry-After": "1"}


class BadParameter(ValueError):
    """A request parameter is unusable; ``parameter`` names it."""

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"{parameter}: {problem}")
        self.parameter = parameter
        self.problem = problem


def bad_request(view: View, exc: BadParameter) -> Response:
    return view.json(
        {"error": f"bad parameter {exc.parameter!r}: {exc.problem}", "parameter": exc.parameter},
        status=400,
    )


def error(view: View, status: int, message: str, **extra: Any) -> Response:
    headers = RETRY_AFTER if status == 503 else None
    return view.json({"error": message, **extra}, status=status, headers=headers)


def only(query: Mapping[str, str], allowed: Iterable[str]) -> None:
    """Refuse parameters the endpoint does not know (a typo must not be ignored silently)."""
    known = set(allowed)
    for name in query:
        if name not in known:
            raise BadParameter(name, f"unknown parameter (allowed: {', '.join(sorted(known))})")


def single(query: Any, name: str) -> str | None:
    values = query.getall(name, [])
    if len(values) > 1:
        raise BadParameter(name, "given more than once")
    return str(values[0]) if values else None


def parse_card_id(text: str, parameter: str = "card_id") -> str:
    if not text.strip():
        raise BadParameter(parameter, "must be a non-empty card token")
    if len(text) > MAX_ID_LENGTH:
        raise BadParameter(parameter, f"is longer than {MAX_ID_LENGTH} characters")
    if contains_pan(text):
        # The pipeline never holds card numbers; nor should a URL or a log line.
        raise BadParameter(parameter, "looks like a card number; use the card token")
    return text


def parse_rule_id(text: str, parameter: str = "rule") -> str:
    if not RULE_ID.fullmatch(text):
        raise BadParameter(parameter, "is not a rule id ([a-z0-9][a-z0-9._-]{0,63})")
    return text


def parse_int(query: Any, name: str, default: int, low: int, high: int) -> int:
    text = single(query, name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadParameter(name, f"must be an integer from {low} to {high}") from None
    if not low <= value <= high:
        raise BadParameter(name, f"must be from {low} to {high}")
    return value

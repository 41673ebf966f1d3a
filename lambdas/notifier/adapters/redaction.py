"""Scrubbing secrets (the Slack webhook URL, the bot token) out of log lines and messages.

The process-wide :data:`REDACTOR` learns each secret as it is read; :func:`redact`
also catches anything shaped like a Slack secret that this process was never told about.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

REDACTED = "[redacted]"
# Defence in depth for secrets this process was never told about (e.g. a URL that
# arrived in a response body): Slack webhook paths and Slack tokens have fixed shapes.
_SECRET_PATTERNS = (
    re.compile(r"https?://hooks\.slack(?:-gov)?\.com/\S+"),
    re.compile(r"/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]+"),
    re.compile(r"xox[abeoprs]-[A-Za-z0-9-]+"),
)
# Shorter strings would redact ordinary words if someone configured a silly secret.
_MIN_SECRET_LEN = 8


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (and anything shaped like a Slack secret) replaced."""
    for secret in sorted((s for s in secrets if len(s) >= _MIN_SECRET_LEN), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


class Redactor:
    """The secrets this process has handled, for scrubbing log lines and error messages."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()

    def add(self, secret: str) -> None:
        if len(secret) < _MIN_SECRET_LEN:
            return
        self._secrets.add(secret)
        # A webhook URL's secret is its path; an HTTP error may quote only that part.
        path = urlsplit(secret).path if "://" in secret else ""
        if len(path) >= _MIN_SECRET_LEN and path.count("/") >= 2:
            self._secrets.add(path)

    def __call__(self, text: str) -> str:
        return redact(text, self._secrets)


REDACTOR = Redactor()


class RedactingFilter(logging.Filter):
    """A logging filter that formats each record and scrubs it with :data:`REDACTOR`."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = REDACTOR(record.getMessage())
        record.args = None
        return True

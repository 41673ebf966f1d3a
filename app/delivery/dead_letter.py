"""The dead-letter record: what ``payments.dlq`` carries for a record that was not decided."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.detection.pan import redact_pans, redact_text

# The DLQ record carries the original bytes in base64 (4/3 larger) beside its metadata;
# above this many original bytes it keeps a head of them, their size and SHA-256, so the
# record stays well inside the producer's 1 MiB request limit.
DLQ_ORIGINAL_LIMIT = 256 * 1024


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """What ``payments.dlq`` carries: the original bytes, why, and where they came from.

    Card numbers are masked everywhere in it (value, key and detail), and an oversize
    original is cut to a head with its full size and SHA-256 (of the bytes as received).
    """

    reason: str  # a stable code, e.g. "missing_field", "late_event"
    detail: str  # a human sentence naming the field
    source_topic: str
    source_partition: int
    source_offset: int
    original: bytes | None
    original_key: bytes | None
    received_at: str
    original_size: int | None = None
    original_sha256: str | None = None
    truncated: bool = False

    @classmethod
    def for_message(cls, message: Any, reason: str, detail: str) -> DeadLetter:
        """The DLQ record for a consumed Kafka message (value and key as received)."""
        value = None if message.value is None else bytes(message.value)
        size = digest = None
        truncated = False
        if value is not None:
            size = len(value)
            digest = hashlib.sha256(value).hexdigest()
            if size > DLQ_ORIGINAL_LIMIT:
                value, truncated = value[:DLQ_ORIGINAL_LIMIT], True
        key = None if message.key is None else bytes(message.key)[: DLQ_ORIGINAL_LIMIT // 64]
        return cls(
            reason=reason,
            detail=redact_text(detail)[:2000],
            source_topic=message.topic,
            source_partition=message.partition,
            source_offset=message.offset,
            original=None if value is None else redact_pans(value),
            original_key=None if key is None else redact_pans(key),
            received_at=datetime.now(UTC).isoformat(),
            original_size=size,
            original_sha256=digest,
            truncated=truncated,
        )

    def to_json(self) -> bytes:
        def b64(data: bytes | None) -> str | None:
            return None if data is None else base64.b64encode(data).decode()

        return json.dumps(
            {
                "reason": self.reason,
                "detail": self.detail,
                "source": {
                    "topic": self.source_topic,
                    "partition": self.source_partition,
                    "offset": self.source_offset,
                },
                "original_b64": b64(self.original),
                "original_key_b64": b64(self.original_key),
                "original_size": self.original_size,
                "original_sha256": self.original_sha256,
                "original_truncated": self.truncated,
                "received_at": self.received_at,
            },
            separators=(",", ":"),
        ).encode()

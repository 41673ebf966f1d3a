"""The dead-letter record: what ``payments.dlq`` carries for a record that was not decided."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.detection.pan import may_hold_pan, redact_pans_cut, redact_text_cut

# The DLQ record carries the original bytes in base64 (4/3 larger) beside its metadata;
# above this many original bytes it keeps a head of them, their size and SHA-256, so the
# record stays well inside the producer's 1 MiB request limit.
DLQ_ORIGINAL_LIMIT = 256 * 1024
KEY_LIMIT = DLQ_ORIGINAL_LIMIT // 64
# Card numbers are masked in this much past a cut before cutting, so a number the cut
# splits shows no more than its last four digits (unless its digits are spread over more
# than this, which no producer does by mistake). Masking the whole of a 1 MB record would
# cost four times as much for nothing kept.
CUT_MARGIN = 4096


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """What ``payments.dlq`` carries: the original bytes, why, and where they came from.

    Card numbers are masked everywhere in it (value, key and detail), as they read once
    decoded: JSON escapes, non-ASCII digits, separators and UTF-16/32 included; the copy is
    the original with each masked digit, however spelt, replaced by one ``*``
    (``app.detection.pan``). An oversize original is cut to a head with its full size and
    SHA-256 (of the bytes as received; left out when a card number was masked, or may be
    in the part cut off).
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
        size = digest = copy = None
        truncated = False
        if value is not None:
            size = len(value)
            truncated = size > DLQ_ORIGINAL_LIMIT
            copy = redact_pans_cut(
                value[: DLQ_ORIGINAL_LIMIT + CUT_MARGIN], slice(DLQ_ORIGINAL_LIMIT)
            )
            # With every other byte of the record in the copy, a digest of the original
            # would give the masked digits away to anyone trying them all: none then.
            if copy == value[:DLQ_ORIGINAL_LIMIT] and not may_hold_pan(value[DLQ_ORIGINAL_LIMIT:]):
                digest = hashlib.sha256(value).hexdigest()
        key = None if message.key is None else bytes(message.key)[: KEY_LIMIT + CUT_MARGIN]
        return cls(
            reason=reason,
            detail=redact_text_cut(detail, slice(2000)),
            source_topic=message.topic,
            source_partition=message.partition,
            source_offset=message.offset,
            original=copy,
            original_key=None if key is None else redact_pans_cut(key, slice(KEY_LIMIT)),
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

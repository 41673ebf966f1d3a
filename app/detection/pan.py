"""Card numbers (PANs) must never enter the pipeline: recognise them and mask them."""

from __future__ import annotations

import re

_PAN_CANDIDATE = re.compile(r"\d{13,19}")
_DIGIT_RUN = re.compile(rb"\d{13,19}")
# A card number as data-loss scanners see one: 13-19 digits that no other digit touches.
_DELIMITED_RUN = re.compile(r"(?<!\d)\d{13,19}(?!\d)")
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_THIRTEEN_ZEROS = b"0" * 13


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def looks_like_pan(text: str) -> bool:
    return bool(_PAN_CANDIDATE.fullmatch(text)) and luhn_valid(text)


def contains_pan(text: str) -> bool:
    """A card number anywhere in ``text``, e.g. ``txn-4111111111111111``."""
    return any(luhn_valid(run.group(0)) for run in _DELIMITED_RUN.finditer(text))


def may_hold_pan(raw: bytes) -> bool:
    """False only when no field decoded from the JSON ``raw`` can hold a card number: it is
    ASCII (no non-ASCII digits), has no ``\\u`` escape (no digits spelt as escapes) and no
    run of 13 digits. One C-level scan of the record instead of a regex per field."""
    # Every digit made "0", then a substring search: C speed, 4x a regex search here.
    return not raw.isascii() or b"\\u" in raw or _THIRTEEN_ZEROS in raw.translate(_DIGITS_TO_ZERO)


def redact_pans(raw: bytes) -> bytes:
    """Mask card-number-like digit runs so a PAN sent by mistake never reaches the DLQ."""

    def mask(match: re.Match[bytes]) -> bytes:
        digits = match.group(0)
        if not luhn_valid(digits.decode()):
            return digits
        return b"*" * (len(digits) - 4) + digits[-4:]

    return _DIGIT_RUN.sub(mask, raw)


def redact_text(text: str) -> str:
    """:func:`redact_pans` for text: details, log lines and keys shown to people."""
    return redact_pans(text.encode("utf-8", errors="surrogateescape")).decode(
        "utf-8", errors="surrogateescape"
    )

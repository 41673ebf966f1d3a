"""Card numbers and the ways a producer can spell one, shared by unit and integration tests.

Also a reader independent of ``app.detection.pan``: :func:`readable_digits` turns text into
the digits a person (or a decoder) would read from it, to search stored data for a number.
"""

from __future__ import annotations

import json
import re
import unicodedata


def luhn_complete(body: str) -> str:
    """``body`` with the check digit that makes it pass Luhn."""
    total = 0
    for index, char in enumerate(reversed(body)):
        value = int(char) * (2 if index % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return body + str(-total % 10)


# Networks' published test numbers, and numbers of other ranges and lengths completed with
# their check digit.
CARD_NUMBERS: dict[str, str] = {
    "visa": "4111111111111111",
    "visa-13": "4222222222222",
    "visa-19": luhn_complete("411111111111111111"),
    "mastercard": "5555555555554444",
    "mastercard-2": "2223003122003222",
    "amex": "378282246310005",
    "discover": "6011111111111117",
    "diners": "36227206271667",
    "jcb": "3530111333300000",
    "unionpay": "6200000000000005",
    "maestro": "6759649826438453",
    "mir": luhn_complete("220000000000000"),
    "rupay": luhn_complete("608000000000000"),
}
PAN = CARD_NUMBERS["visa"]

# How each length is usually grouped when printed: 4-4-4-4, Amex's 4-6-5, 4-4-4-4-3, ...
_GROUPS = {13: (4, 4, 5), 14: (4, 6, 4), 15: (4, 6, 5), 16: (4, 4, 4, 4), 19: (4, 4, 4, 4, 3)}
_ARABIC_INDIC = {ord("0") + i: 0x0660 + i for i in range(10)}
_FULLWIDTH = {ord("0") + i: 0xFF10 + i for i in range(10)}


def grouped(digits: str, separator: str) -> str:
    """``digits`` in their usual groups, ``separator`` between them."""
    groups, start = [], 0
    for size in _GROUPS.get(len(digits), (4,) * (len(digits) // 4 + 1)):
        groups.append(digits[start : start + size])
        start += size
    return separator.join(g for g in groups if g)


def spellings(digits: str) -> dict[str, str]:
    """Each way a decoded text field can carry the card number ``digits``."""
    separators = " -."
    return {
        "plain": digits,
        "spaces": grouped(digits, " "),
        "dashes": grouped(digits, "-"),
        "dots": grouped(digits, "."),
        "every digit apart": " ".join(digits),
        "mixed separators": "".join(
            d + (separators[i % 3] if i < len(digits) - 1 else "") for i, d in enumerate(digits)
        ),
        "no-break spaces": grouped(digits, "\u00a0"),
        "zero-width spaces": "\u200b".join(digits),
        "arabic-indic digits": digits.translate(_ARABIC_INDIC),
        "fullwidth digits": grouped(digits, " ").translate(_FULLWIDTH),
        "after a prefix": "txn-" + digits,
        "in a token": "tok_" + digits,
        "in a sentence": f"card {grouped(digits, ' ')} exp 12/28",
    }


def json_escaped(text: str) -> str:
    """``text`` as a JSON string literal with every digit written as a ``\\u`` escape."""
    return '"' + "".join(f"\\u{ord(c):04x}" if c.isdecimal() else c for c in text) + '"'


def field_variants(digits: str) -> dict[str, str]:
    """Each way a payment field can carry ``digits``, as JSON text (a string literal)."""
    found = {name: json.dumps(text) for name, text in spellings(digits).items()}
    found["json escapes"] = json_escaped(digits)
    found["json escapes, dashes"] = json_escaped(grouped(digits, "-"))
    return found


_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")
_INVISIBLE = re.compile("[\x00\u00ad\u200b-\u200f\u2060-\u2064\ufeff]")
_BETWEEN_DIGITS = re.compile(r"(?<=\d)[\s\-.\u2010-\u2015\u2212](?=\d)")


def readable_digits(text: str) -> str:
    """``text`` as a reader sees its digits: escapes decoded, every decimal digit in ASCII,
    invisible characters and single separators between digits removed. A card number spelt
    any of the ways above shows in it as its plain digits."""
    text = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
    text = _INVISIBLE.sub("", text)
    text = "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in text)
    return _BETWEEN_DIGITS.sub("", text)


def readings(blob: bytes) -> str:
    """What can be read from stored bytes: as UTF-8, and as UTF-16 when they carry NULs."""
    texts = [blob.decode("utf-8", errors="replace")]
    if b"\x00" in blob:
        for encoding in ("utf-16-le", "utf-16-be", "utf-16"):
            texts.append(blob.decode(encoding, errors="replace"))
    return "\n".join(readable_digits(t) for t in texts)

"""Card numbers (PANs) must never enter the pipeline: recognise them, however spelt, and
mask them.

A *card number* here is what an issuer could have issued: 13-19 digits whose leading digits
fall in a card network's issuer (IIN) range, whose length is one that network issues for
that range, and that pass the Luhn check. Tokens are not card numbers merely for holding
digits: ``tok_7567273142341000`` is accepted (75 is no network's range), while
``tok_4111111111111111`` and ``txn-4111111111111111`` are refused (a delimited Visa number):
a scanner, or a person, would read one there. Of ``tok_`` and 16 random digits, about 3 %
are refused (the share of 16-digit strings in a range at a length it issues, ~31 %, over
the 1 in 10 that pass Luhn), against 10 % by the Luhn check alone. A network token (issued
from the networks' own ranges, Luhn-valid by design) cannot be told from a card number and
is refused too.

How the digits may be written (each a way a person or a program would still read the number):

- separated: one separator (whitespace, a dash, a full stop) may stand between two digits,
  so ``4111 1111 1111 1111``, ``3782-822463-10005`` and ``4111.1111.1111.1111`` count. A
  *chain* is digits joined that way; its *groups* are the digits between separators. A card
  number is a run of whole groups of a chain: delimited, so no other digit touches it
  except across a separator;
- any decimal digit counts, not only ASCII ones (Arabic-Indic, fullwidth, ...);
- characters that show as nothing (NUL, zero-width space, soft hyphen, ...) are ignored, so
  UTF-16 or UTF-32 text read as UTF-8 shows its digits;
- an escape spelling a digit, separator or invisible character counts as that character:
  JSON's ``\\u0034`` (and surrogate pairs), Python's ``\\x34`` and ``\\U00000034``.

Masking replaces each digit of a card number but its last four with ``*``, in place: an
escaped digit (all six characters of ``\\u0034``) becomes one ``*``. Everything else is left
as it was, so a masked JSON record stays the same JSON, and nothing left in it rebuilds the
number.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterator

# Card numbers are 13 to 19 digits long (ISO/IEC 7812; 12-digit Maestro numbers are left out).
MIN_LENGTH, MAX_LENGTH = 13, 19

_SIXTEEN_TO_19 = (16, 17, 18, 19)
# (first IIN, last IIN, the lengths issued): the networks' published ranges, as collected in
# Wikipedia's "Payment card number" table. Ranges of defunct networks are left out.
_ISSUER_RANGES: tuple[tuple[str, str, tuple[int, ...]], ...] = (
    ("4", "4", (13, 16, 19)),  # Visa, Visa Electron
    ("51", "55", (16,)),  # Mastercard
    ("2221", "2720", (16,)),  # Mastercard
    ("34", "34", (15,)),  # American Express
    ("37", "37", (15,)),  # American Express
    ("6011", "6011", _SIXTEEN_TO_19),  # Discover
    ("644", "649", _SIXTEEN_TO_19),  # Discover
    ("65", "65", _SIXTEEN_TO_19),  # Discover, RuPay, Troy
    ("622126", "622925", _SIXTEEN_TO_19),  # Discover (UnionPay co-brand)
    ("3528", "3589", _SIXTEEN_TO_19),  # JCB (LankaPay's 357111 among them)
    ("300", "305", (14, 15, 16, 17, 18, 19)),  # Diners Club
    ("3095", "3095", (14, 15, 16, 17, 18, 19)),  # Diners Club
    ("36", "36", (14, 15, 16, 17, 18, 19)),  # Diners Club International
    ("38", "39", (14, 15, 16, 17, 18, 19)),  # Diners Club
    ("62", "62", _SIXTEEN_TO_19),  # UnionPay
    ("81", "81", _SIXTEEN_TO_19),  # UnionPay, RuPay
    ("82", "82", (16,)),  # RuPay
    ("60", "60", (16,)),  # RuPay
    ("353", "353", (16,)),  # RuPay
    ("356", "356", (16,)),  # RuPay
    ("508", "508", (16,)),  # RuPay
    ("5018", "5018", tuple(range(13, 20))),  # Maestro
    ("5020", "5020", tuple(range(13, 20))),  # Maestro
    ("5038", "5038", tuple(range(13, 20))),  # Maestro
    ("5893", "5893", tuple(range(13, 20))),  # Maestro
    ("6304", "6304", tuple(range(13, 20))),  # Maestro
    ("6759", "6759", tuple(range(13, 20))),  # Maestro (UK)
    ("6761", "6763", tuple(range(13, 20))),  # Maestro
    ("676770", "676770", tuple(range(13, 20))),  # Maestro UK
    ("676774", "676774", tuple(range(13, 20))),  # Maestro UK
    ("5019", "5019", (16,)),  # Dankort
    ("2200", "2204", _SIXTEEN_TO_19),  # Mir
    ("2205", "2205", (16,)),  # BORICA
    ("506099", "506198", (16, 18, 19)),  # Verve
    ("507865", "507964", (16, 18, 19)),  # Verve
    ("650002", "650027", (16, 18, 19)),  # Verve
    ("636", "636", _SIXTEEN_TO_19),  # InterPayment
    ("637", "639", (16,)),  # InstaPayment
    ("60400100", "60420099", _SIXTEEN_TO_19),  # UkrCard
    ("9792", "9792", (16,)),  # Troy
    ("8600", "8600", (16,)),  # Uzcard
    ("9860", "9860", (16,)),  # Humo
    ("9704", "9704", (16, 19)),  # Napas
    ("31", "31", (19,)),  # China T-Union
    ("1", "1", (15,)),  # UATP (airline cards)
)


def _lengths_by_prefix() -> dict[str, frozenset[int]]:
    """Every IIN of every range spelt out, with the lengths issued under it: a number's
    lengths are then a few dict probes of its leading digits."""
    found: dict[str, set[int]] = {}
    for first, last, lengths in _ISSUER_RANGES:
        for iin in range(int(first), int(last) + 1):
            found.setdefault(str(iin).zfill(len(first)), set()).update(lengths)
    return {prefix: frozenset(lengths) for prefix, lengths in found.items()}


_LENGTHS_BY_PREFIX = _lengths_by_prefix()
_PREFIX_WIDTHS = tuple(sorted({len(prefix) for prefix in _LENGTHS_BY_PREFIX}))


def issued_lengths(digits: str, start: int = 0) -> frozenset[int]:
    """The lengths some network issues for the ranges ``digits[start:]`` (ASCII) begins in."""
    found: frozenset[int] = frozenset()
    for width in _PREFIX_WIDTHS:
        lengths = _LENGTHS_BY_PREFIX.get(digits[start : start + width])
        if lengths is not None:
            found |= lengths
    return found


def luhn_valid(digits: str) -> bool:
    """The Luhn check of ASCII ``digits``."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def in_issuer_range(digits: str) -> bool:
    """``digits`` (ASCII) have a length some network issues for the range they start in."""
    return len(digits) in issued_lengths(digits)


def is_card_number(digits: str) -> bool:
    """``digits`` (ASCII, nothing else) could be an issued card number: an issuer range and
    a length it issues, and the Luhn check. A network token is one too: tokens are issued
    from the networks' own ranges and pass Luhn by design, so no check can tell them apart."""
    return in_issuer_range(digits) and luhn_valid(digits)


# Whitespace, dashes and full stops separate digit groups; the chain regex takes one at a
# time, so "4111  1111" (two) or "4111/1111" are not one number.
_SEPARATOR_CHARS = "-.\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d\uff0e"
_SEPARATOR = rf"[\s{re.escape(_SEPARATOR_CHARS)}]"
# Shown as nothing: NUL (UTF-16/32 text read as UTF-8), soft hyphen, zero-width and
# direction marks, word joiners, the byte order mark.
_INVISIBLE_CHARS = (
    "\x00\u00ad\u180e\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2061\u2062\u2063\u2064\ufeff"
)
_INVISIBLE = frozenset(_INVISIBLE_CHARS)
_INVISIBLES = f"[{_INVISIBLE_CHARS}]*"
_CHAIN = re.compile(rf"\d(?:{_INVISIBLES}(?:{_SEPARATOR}{_INVISIBLES})?\d)*")
_IS_SEPARATOR = re.compile(_SEPARATOR)

# One escape at a time, left to right, so "\\u0034" (an escaped backslash, then "u0034")
# is not read as a digit.
_ESCAPE = re.compile(
    r"\\(?:u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})"
    r"|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|x([0-9a-fA-F]{2})|.)",
    re.DOTALL,
)


def _escaped_char(match: re.Match[str]) -> str | None:
    """The character an escape spells, when it is one a card number can be written with."""
    high, low, four, eight, two = match.groups()
    if high is not None:
        code = 0x10000 + ((int(high, 16) - 0xD800) << 10) + (int(low, 16) - 0xDC00)
    else:
        spelt = four or eight or two
        if spelt is None:
            return None
        code = int(spelt, 16)
    if code > 0x10FFFF:
        return None
    char = chr(code)
    if char.isdecimal() or char in _INVISIBLE or _IS_SEPARATOR.fullmatch(char):
        return char
    return None


class _Reading:
    """``source`` as it reads: the escapes that spell digits, separators or invisible
    characters resolved. Maps each character of :attr:`text` back to its span of
    ``source``, so a masked digit replaces exactly what spelt it."""

    __slots__ = ("_escapes", "_shifts", "source", "text")

    def __init__(self, source: str) -> None:
        self.source = source
        self._escapes: list[int] = []  # index in text of each resolved escape
        self._shifts: list[int] = []  # source index minus text index just after it
        if "\\" not in source:
            self.text = source
            return
        pieces: list[str] = []
        taken = shift = 0
        for match in _ESCAPE.finditer(source):
            char = _escaped_char(match)
            if char is None:
                continue
            pieces.append(source[taken : match.start()])
            self._escapes.append(match.start() - shift)
            pieces.append(char)
            shift += match.end() - match.start() - 1
            self._shifts.append(shift)
            taken = match.end()
        pieces.append(source[taken:])
        self.text = "".join(pieces)

    def source_span(self, index: int) -> tuple[int, int]:
        """The span of ``source`` that spells ``text[index]``."""
        before = bisect.bisect_right(self._escapes, index)
        if before and self._escapes[before - 1] == index:
            end = index + self._shifts[before - 1] + 1
            previous = self._shifts[before - 2] if before > 1 else 0
            return index + previous, end
        start = index + (self._shifts[before - 1] if before else 0)
        return start, start + 1

    def masked(self, indexes: list[int]) -> str:
        """``source`` with the characters at ``indexes`` of :attr:`text` replaced by ``*``."""
        if not self._escapes:
            chars = list(self.source)
            for index in indexes:
                chars[index] = "*"
            return "".join(chars)
        pieces: list[str] = []
        taken = 0
        for index in sorted(indexes):
            start, end = self.source_span(index)
            pieces += (self.source[taken:start], "*")
            taken = end
        pieces.append(self.source[taken:])
        return "".join(pieces)


class _AsciiDigits(dict[int, int]):
    """A ``str.translate`` table of every decimal digit of Unicode to its ASCII digit,
    filled as digits are met (spelling all 660 out would cost a scan of Unicode)."""

    def __missing__(self, code: int) -> int:
        char = chr(code)
        self[code] = ord(str(int(char))) if char.isdecimal() else code
        return self[code]


_TO_ASCII = _AsciiDigits()
_DIGIT_RUN = re.compile(r"\d+")
_DIGIT = re.compile(r"\d")
# Group starts examined per text. Past it, a chain of 13 digits or more with more groups
# than are left to examine counts as one card number, masked whole: 256 KiB of separated
# digits (a DLQ copy) cost about 0.1 s, not minutes. No field a payment keeps (128
# characters at most) comes near it.
_CHECK_BUDGET = 4096
# Masking passes over one text before the rest is masked whole (see redact_text).
_PRECISE_PASSES = 4


class _Chain:
    """One chain of ``text``: its digits in ASCII, where each group starts among them, and
    where each run of digits (a group, or part of one between invisible characters) is."""

    __slots__ = ("digits", "group_starts", "run_digits", "run_starts")

    def __init__(self, text: str, start: int, end: int) -> None:
        pieces: list[str] = []
        self.run_starts: list[int] = []  # index in text of each run
        self.run_digits: list[int] = []  # index in digits of each run
        self.group_starts: list[int] = []  # index in digits of each group
        count, previous_end = 0, start
        for run in _DIGIT_RUN.finditer(text, start, end):
            gap = text[previous_end : run.start()]
            if not self.run_starts or any(char not in _INVISIBLE for char in gap):
                self.group_starts.append(count)
            self.run_starts.append(run.start())
            self.run_digits.append(count)
            pieces.append(run.group())
            count += run.end() - run.start()
            previous_end = run.end()
        self.group_starts.append(count)  # where the last group ends
        digits = "".join(pieces)
        self.digits = digits if digits.isascii() else digits.translate(_TO_ASCII)

    def card_numbers(self) -> Iterator[tuple[int, int]]:
        """``(start, end)`` in :attr:`digits` of each run of whole groups that is one."""
        digits, bounds = self.digits, self.group_starts
        for index, start in enumerate(bounds[:-1]):
            first = bisect.bisect_left(bounds, start + MIN_LENGTH, index + 1)
            last = bisect.bisect_right(bounds, start + MAX_LENGTH, first)
            if first == last:
                continue
            lengths = issued_lengths(digits, start)
            for end in bounds[first:last]:
                if end - start in lengths and luhn_valid(digits[start:end]):
                    yield start, end

    def positions(self, start: int, end: int) -> list[int]:
        """The indexes in ``text`` of ``digits[start:end]``."""
        found: list[int] = []
        run = bisect.bisect_right(self.run_digits, start) - 1
        while start < end:
            next_run = self.run_digits[run + 1] if run + 1 < len(self.run_digits) else end
            stop = min(end, next_run)
            offset = self.run_starts[run] - self.run_digits[run]
            found.extend(range(start + offset, stop + offset))
            start, run = stop, run + 1
        return found


def _card_numbers(text: str, budget: int = _CHECK_BUDGET) -> Iterator[list[int]]:
    """The indexes in ``text`` of each card number's digits (see the module's docstring),
    examining at most ``budget`` group starts."""
    for match in _CHAIN.finditer(text):
        if match.end() - match.start() < MIN_LENGTH:
            continue
        groups = 1 + len(_IS_SEPARATOR.findall(text, match.start(), match.end()))
        if groups > budget:
            every = [digit.start() for digit in _DIGIT.finditer(text, match.start(), match.end())]
            if len(every) >= MIN_LENGTH:
                yield every
            continue
        budget -= groups
        chain = _Chain(text, match.start(), match.end())
        if len(chain.digits) < MIN_LENGTH:
            continue
        for start, end in chain.card_numbers():
            yield chain.positions(start, end)


_ASCII_DIGITS = b"0123456789"


def contains_pan(text: str) -> bool:
    """A card number anywhere in ``text``, however spelt: ``txn-4111111111111111``,
    ``4111 1111 1111 1111``, ``\\u0034111111111111111``."""
    if text.isascii() and "\\" not in text:
        # Plain ASCII (no escape, no other script's digits) with fewer than 13 digits in
        # all cannot spell one: a C-level count instead of the reading and the chains,
        # for the fields of a record that holds a long digit run elsewhere (a timestamp
        # beside a numeric token).
        ascii_text = text.encode()
        if len(ascii_text) - len(ascii_text.translate(None, _ASCII_DIGITS)) < MIN_LENGTH:
            return False
    return next(_card_numbers(_Reading(text).text), None) is not None


def redact_text(text: str) -> str:
    """``text`` with every card number masked (all its digits but the last four become
    ``*``): details, log lines and keys shown to people, and the decoded record."""
    passes = 0
    while True:
        reading = _Reading(text)
        masked: set[int] = set()
        # Masking can leave a number's last four digits starting a new group of a longer
        # chain: read again until no card number is left. A text crafted to go on doing
        # that has each of its chains of 13 digits masked whole after a few passes.
        budget = _CHECK_BUDGET if passes < _PRECISE_PASSES else 0
        for indexes in _card_numbers(reading.text, budget):
            masked.update(indexes[:-4])
        if not masked:
            return text
        text = reading.masked(sorted(masked))
        passes += 1


# The prefilter's view of ASCII bytes: every digit a "0", every separator and NUL deleted, so
# a chain of 13 digits, separated or not, becomes 13 zeros in a row.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_ASCII_SEPARATORS = bytes(b for b in range(128) if _IS_SEPARATOR.fullmatch(chr(b)))
_THIRTEEN_ZEROS = b"0" * MIN_LENGTH


def may_hold_pan(raw: bytes) -> bool:
    """False only when no reading of ``raw`` can hold a card number: it is ASCII (no
    non-ASCII digit or separator), has no backslash (no escape), no NUL (no UTF-16/32 text)
    and no chain of 13 digits. A few C-level scans of the record instead of a regex per field:
    it runs on every payment."""
    return (
        not raw.isascii()
        or b"\\" in raw
        or b"\x00" in raw
        or _THIRTEEN_ZEROS in raw.translate(_DIGITS_TO_ZERO, _ASCII_SEPARATORS)
    )


def _readings(raw: bytes) -> Iterator[str]:
    """The encodings ``raw`` is read in: UTF-8 (undecodable bytes kept as they are), and the
    UTF-16 or UTF-32 JSON's decoder would guess from its NUL bytes, if it decodes."""
    yield "utf-8"
    guessed = json.detect_encoding(raw)
    if guessed not in ("utf-8", "utf-8-sig"):
        try:
            raw.decode(guessed)
        except UnicodeDecodeError:
            return
        yield guessed


def _errors(encoding: str) -> str:
    return "surrogateescape" if encoding == "utf-8" else "strict"


def bytes_hold_pan(raw: bytes) -> bool:
    """A card number in ``raw`` read as text, in any encoding it could be read in (see
    :func:`redact_pans`): a Kafka key, a whole record."""
    if not may_hold_pan(raw):
        return False
    return any(contains_pan(raw.decode(encoding, _errors(encoding))) for encoding in _readings(raw))


def redact_pans(raw: bytes) -> bytes:
    """``raw`` with every card number masked, in every encoding it could be read in: what
    goes to the DLQ. The bytes come back unchanged when they hold none."""
    if not may_hold_pan(raw):
        return raw
    while True:
        before = raw
        for encoding in _readings(raw):
            try:
                text = raw.decode(encoding, _errors(encoding))
            except UnicodeDecodeError:
                # Masking in UTF-8 changed the bytes the UTF-16/32 reading was guessed from.
                continue
            masked = redact_text(text)
            if masked != text:
                raw = masked.encode(encoding, _errors(encoding))
        # Masking in one encoding changes what the other reads: again until neither changes.
        if raw == before:
            return raw


def redact_text_cut(text: str, cut: slice) -> str:
    """``redact_text(text)[cut]``, masked again after the cut: a cut through a longer digit
    run can leave 13-19 digits that read as a card number. (Masking first keeps a number
    the cut splits from showing more than its last four.)"""
    return redact_text(redact_text(text)[cut])


def redact_pans_cut(raw: bytes, cut: slice) -> bytes:
    """:func:`redact_text_cut` for bytes."""
    return redact_pans(redact_pans(raw)[cut])

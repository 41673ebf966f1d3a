"""app.detection.pan: card numbers are recognised however spelt, tokens are not, and a
masked copy holds no number in any reading."""

from __future__ import annotations

import json
import random
import time

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.detection import pan
from app.detection.pan import (
    bytes_hold_pan,
    contains_pan,
    in_issuer_range,
    is_card_number,
    may_hold_pan,
    redact_pans,
    redact_pans_cut,
    redact_text,
)
from app.detection.validation import InvalidPayment, parse_payment
from app.generator import PaymentGenerator
from tests import factories
from tests.pan_variants import (
    CARD_NUMBERS,
    PAN,
    field_variants,
    grouped,
    json_escaped,
    luhn_complete,
    readable_digits,
    spellings,
)

NOW_MS = int(time.time() * 1000)
EVERY_SPELLING = [
    pytest.param(text, id=f"{network}-{name}")
    for network, digits in CARD_NUMBERS.items()
    for name, text in spellings(digits).items()
]


@pytest.mark.parametrize("text", EVERY_SPELLING)
def test_every_spelling_of_every_network_is_a_card_number_and_masks_to_its_last_four(
    text: str,
) -> None:
    assert contains_pan(text)
    masked = redact_text(text)
    assert not contains_pan(masked)
    assert not any(digits in readable_digits(masked) for digits in CARD_NUMBERS.values())
    assert readable_digits(masked).count("*") >= 9  # all but the last four digits


@pytest.mark.parametrize(
    "text",
    [
        "tok_7567273142341000",  # the generator's token that was once refused: 75 is no range
        "tok_0123456789abcdef",
        luhn_complete("999999999999999"),  # Luhn-valid, but no network issues 99...
        "4111111111111112",  # a Visa range, but not Luhn-valid
        luhn_complete("41111111111111"),  # Luhn-valid Visa digits, but Visa issues no 15
        luhn_complete("378282246310000"),  # Amex range at 16 digits: Amex issues 15
        "14111111111111111",  # 17 digits: the card number inside is touched by another digit
        "4111--1111-1111-1111",  # two separators in a row end a chain
        "4111/1111/1111/1111",  # a slash is no separator
        "1795000000001",  # a millisecond timestamp
        "2026-11-28T14:03:07.250Z",
        "203.0.113.7",
        "2001:db8::4111:1111:1111:1111",
        "txn-1_000000001",
        "txn-4000_000000123",  # "txn-4000-000000123" would be 13 Visa digits; "_" keeps apart
        "\\\\u0034111111111111111",  # an escaped backslash, then text: no digit escape
    ],
)
def test_tokens_ids_and_numbers_that_no_network_issues_are_not_card_numbers(text: str) -> None:
    assert not contains_pan(text)
    assert redact_text(text) == text
    assert not bytes_hold_pan(text.encode())


def test_issuer_ranges_and_lengths() -> None:
    # Each network's range at a length it issues, and not at one it does not.
    for digits in CARD_NUMBERS.values():
        assert is_card_number(digits)
    assert in_issuer_range("4" * 13) and in_issuer_range("4" * 19)
    assert not in_issuer_range("4" * 15) and not in_issuer_range("4" * 17)
    assert in_issuer_range("2221" + "0" * 12) and in_issuer_range("2720" + "0" * 12)
    assert not in_issuer_range("2220" + "0" * 12) and not in_issuer_range("2721" + "0" * 12)
    assert in_issuer_range("622126" + "0" * 10) and in_issuer_range("622925" + "0" * 10)
    assert in_issuer_range("37" + "0" * 13) and not in_issuer_range("37" + "0" * 14)
    assert not in_issuer_range("7" * 16) and not in_issuer_range("0" * 16)
    assert not in_issuer_range("4" * 12) and not in_issuer_range("4" * 20)


def test_a_network_token_is_a_card_number_to_the_check() -> None:
    # Network tokens come from the networks' own ranges and pass Luhn by design: a Visa
    # token cannot be told from a Visa card number, so a card_id holding one is refused.
    visa_token = luhn_complete("489537" + "001234567")
    assert is_card_number(visa_token) and contains_pan(visa_token)


def test_the_false_positive_rate_on_random_digit_tokens_is_the_share_of_issued_numbers() -> None:
    # tok_ + 16 random digits: about 3 % read as card numbers (in a range, at a length it
    # issues: ~31 % of 16-digit strings; and Luhn-valid: 1 in 10). The Luhn check alone
    # refused 10 %. Hence the generator's tokens are hex, redrawn when they read as one.
    rng = random.Random(7)
    tokens = ["tok_" + "".join(rng.choices("0123456789", k=16)) for _ in range(50_000)]
    rate = sum(map(contains_pan, tokens)) / len(tokens)
    assert 0.025 < rate < 0.036


def test_a_card_number_in_a_longer_chain_is_found_at_any_group_boundaries() -> None:
    assert contains_pan("2026 4111 1111 1111 1111")  # a number of 4 digits, then the PAN
    assert contains_pan(f"{PAN}.42")
    assert redact_text("x 5555 5555 5555 4444 2026") == "x **** **** **** 4444 2026"
    # Masking leaves the last four digits; read again, they start a new group of the chain:
    # still no number is left.
    chained = "4111111111111111" + "".join(f" {luhn_complete('4' + '1' * 14)}" for _ in range(3))
    assert not contains_pan(redact_text(chained))


def test_escapes_are_read_as_the_characters_they_spell_and_masked_whole() -> None:
    for literal in (json_escaped(PAN), json_escaped(grouped(PAN, "-"))):
        raw = b'{"card_id":' + literal.encode() + b"}"
        assert contains_pan(literal) and bytes_hold_pan(raw)
        masked = redact_pans(raw)
        # Each escaped digit became one "*": the copy is the same JSON, and nothing in it
        # (raw bytes or decoded value) rebuilds the number.
        value = json.loads(masked)["card_id"]
        assert value.replace("-", "") == "*" * 12 + "1111"
        assert not contains_pan(value) and not bytes_hold_pan(masked)
        assert PAN not in readable_digits(masked.decode())
    # A surrogate pair spelling a mathematical digit, Python's \x and \U escapes.
    for spelt in ("\\ud835\\udfd2", "\\x34", "\\U00000034"):
        assert contains_pan(spelt + PAN[1:])
        assert redact_text(spelt + PAN[1:]) == "*" * 12 + "1111"


def test_records_in_utf16_and_utf32_are_masked_in_their_own_encoding() -> None:
    for encoding in ("utf-16", "utf-16-le", "utf-32"):
        for digits in (PAN, spellings(PAN)["arabic-indic digits"]):
            raw = json.dumps({"card_id": digits}, ensure_ascii=False).encode(encoding)
            assert may_hold_pan(raw) and bytes_hold_pan(raw)
            masked = redact_pans(raw)
            assert not bytes_hold_pan(masked)
            assert json.loads(masked)["card_id"].endswith(digits[-4:])
            assert PAN not in readable_digits(masked.decode(encoding))


def test_the_dlq_copy_is_masked_before_and_after_a_cut() -> None:
    # Cut through the number: masked first, so no more than its last four show.
    assert redact_pans_cut(b"x" * 10 + PAN.encode(), slice(24)) == b"x" * 10 + b"*" * 12 + b"11"
    # Cut through a longer run (17 digits, no number) leaving 16 that read as one: masked.
    assert redact_pans_cut(PAN.encode() + b"2", slice(16)) == b"*" * 12 + b"1111"


def test_the_one_scan_per_record_never_lets_a_spelt_out_pan_through() -> None:
    ordinary = factories.payment(card_id="tok_0123456789abcdef").to_json()
    assert not may_hold_pan(ordinary)  # the common case skips the per-field checks
    assert may_hold_pan(factories.payment(device_id="dev-4111111111111111").to_json())
    # Separated digits: a run of 13 only once the separators are taken out.
    assert may_hold_pan(factories.payment(device_id="4111 1111 1111 1111").to_json())
    assert may_hold_pan(factories.payment(device_id=spellings(PAN)["mixed separators"]).to_json())
    # A card number spelt as JSON escapes, or in non-ASCII digits, has no ASCII digit run
    # in the raw bytes: the record must still get the per-field check, and be refused.
    escaped = ordinary.replace(b'"dev-', b'"\\u0034111111111111111-')
    assert may_hold_pan(escaped)
    with pytest.raises(InvalidPayment) as refused:
        parse_payment(escaped, NOW_MS)
    assert refused.value.reason == "pan_in_field"
    assert may_hold_pan(ordinary.replace(b'"dev-', '"\u0664'.encode()))
    assert may_hold_pan(PAN.encode("utf-16-le"))  # ASCII bytes, but NULs between them


def test_generated_payments_take_the_fast_path() -> None:
    generator = PaymentGenerator(seed=3, cards=200)
    raws = [p.to_json() for p, _ in generator.stream(2_000, NOW_MS)]
    assert not any(map(may_hold_pan, raws))


# Pieces a card number's neighbourhood can be made of: digits (ASCII and not), separators,
# invisible characters, escapes and the characters that start them.
_TEXT = st.lists(
    st.sampled_from(
        [*"0123456789", *" -.\u00a0\u200b\\ux_a*", "\\u0034", "\\u0031", "\u0664", "\u0661", "\x00"]
    ),
    max_size=40,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(prefix=_TEXT, suffix=_TEXT, network=st.sampled_from(sorted(CARD_NUMBERS)))
# Masking the UTF-8 reading shortened the bytes the UTF-16 reading was guessed from.
@example(prefix="\x00\\u0034", suffix="\\u0034 ", network="diners")
def test_any_text_around_a_card_number_masks_to_text_without_one(
    prefix: str, suffix: str, network: str
) -> None:
    text = f"{prefix} {CARD_NUMBERS[network]} {suffix}"
    assert contains_pan(text)
    assert not contains_pan(redact_text(text))
    raw = text.encode("utf-8", errors="surrogatepass")
    assert not bytes_hold_pan(redact_pans(raw))


@settings(max_examples=400, deadline=None)
@given(raw=st.binary(max_size=80) | _TEXT.map(lambda t: t.encode()))
def test_the_prefilter_never_clears_bytes_that_hold_a_card_number(raw: bytes) -> None:
    if not may_hold_pan(raw):
        assert not bytes_hold_pan(raw)
    assert not bytes_hold_pan(redact_pans(raw))


def test_field_variants_are_json_string_literals_of_the_number() -> None:
    for literal in field_variants(PAN).values():
        assert PAN in readable_digits(json.loads(literal))


@pytest.mark.parametrize("raw", [b"1 " * 131_072, b"4111111111111111 " * 15_000, b"7-" * 131_072])
def test_a_huge_chain_of_digits_is_masked_whole_in_bounded_work(
    raw: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Past a budget of group starts examined, a chain counts as one number and is masked
    # whole: 256 KiB of separated digits (a DLQ copy's size) cost a bounded number of group
    # starts examined (milliseconds), not one per group start and pass (minutes). Counted,
    # not timed, so a busy machine cannot fail it.
    examined: list[int] = []

    class CountedChain(pan._Chain):
        def __init__(self, text: str, start: int, end: int) -> None:
            super().__init__(text, start, end)
            examined.append(len(self.group_starts) - 1)

    monkeypatch.setattr(pan, "_Chain", CountedChain)
    masked = redact_pans(raw)
    # Each reading of the record (bytes_hold_pan tries a few) spends at most the budget on
    # each of its precise passes.
    assert sum(examined) <= 4 * pan._PRECISE_PASSES * pan._CHECK_BUDGET
    assert bytes_hold_pan(raw) and not bytes_hold_pan(masked)
    assert sum(map(str.isdecimal, masked.decode())) <= 8


@given(st.from_regex(r"[0-9]{6}(?:[0-9]{2})?", fullmatch=True))
def test_a_bin_of_6_or_8_digits_is_never_a_card_number(bin_: str) -> None:
    """A payment's ``bin`` and a BIN list's entries hold them (PCI DSS lets them be shown)."""
    assert not contains_pan(bin_) and not bytes_hold_pan(f'{{"bin":"{bin_}"}}'.encode())
    assert redact_text(bin_) == bin_

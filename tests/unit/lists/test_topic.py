"""app.lists.topic without a broker: entries asked for by the CLI and the API (ends as a time
or a duration), CSV imports refused naming the line, and the bound checked before
publishing."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.detection.lists import LIST, SUPPRESSION, ListBook, ListError
from app.detection.models import iso_from_ms
from app.lists.topic import load_entry_file, new_entry, over_bound, parse_duration

NOW = 1_795_000_000_000


@pytest.mark.parametrize(("text", "ms"), [("90s", 90_000), ("30m", 1_800_000), ("7d", 604_800_000)])
def test_durations(text: str, ms: int) -> None:
    assert parse_duration("for", text) == ms


@pytest.mark.parametrize("text", ["0h", "2 h", "2w", "", "h", 5])
def test_a_bad_duration_is_refused_naming_for(text: object) -> None:
    with pytest.raises(ListError) as refused:
        parse_duration("for", text)
    assert refused.value.field == "for"


def test_an_entry_ends_a_duration_from_now_or_at_a_time_not_both() -> None:
    entry = new_entry(LIST, "blocked", "d1", lasting="2h", reason="r", by="ana", now_ms=NOW)
    assert (entry.until_ms, entry.added_ms, entry.by) == (NOW + 7_200_000, NOW, "ana")
    with pytest.raises(ListError, match="not both"):
        new_entry(LIST, "blocked", "d1", until=iso_from_ms(NOW + 1), lasting="2h", now_ms=NOW)
    with pytest.raises(ListError, match="not in the future"):
        new_entry(LIST, "blocked", "d1", until=iso_from_ms(NOW), reason="r", now_ms=NOW)


def test_a_suppression_is_asked_for_by_rule_and_key() -> None:
    entry = new_entry(
        SUPPRESSION, "high-value-burst", "m-1", lasting="2h", reason="batch", now_ms=NOW
    )
    assert entry.record_key == "high-value-burst:m-1"
    assert entry.to_json()["key"] == "m-1"


def test_an_import_reads_every_line_and_refuses_naming_the_bad_one(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("value,until,reason\nd1,,\nd2,2026-12-31T00:00:00Z,ring\n")
    entries = load_entry_file(good, "blocked", "ana", NOW)
    assert [(e.value, e.reason, e.by) for e in entries] == [
        ("d1", "imported from good.csv", "ana"),
        ("d2", "ring", "ana"),
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("value,until\nd1,\n4111111111111111,\n")
    with pytest.raises(ListError) as refused:
        load_entry_file(bad, "blocked", "ana", NOW)
    assert refused.value.field == "line 3.value" and "4111" not in str(refused.value)
    headless = tmp_path / "headless.csv"
    headless.write_text("d1\n")
    with pytest.raises(ListError, match="'value' column"):
        load_entry_file(headless, "blocked", "ana", NOW)


def test_the_bound_counts_only_entries_not_held_yet() -> None:
    book = ListBook()
    held = new_entry(LIST, "blocked", "d1", reason="r", now_ms=NOW)
    book.lists["blocked"] = {"d1": held}
    fresh = new_entry(LIST, "blocked", "d2", reason="r", now_ms=NOW)
    assert over_bound(book, [held], 1) is None
    refusal = over_bound(book, [held, fresh], 1)
    assert refusal is not None and "FRAUD_MAX_LIST_ENTRIES" in refusal

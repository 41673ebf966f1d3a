"""app/cases/model.py: case ids, the join update's bounds, the close request."""

from __future__ import annotations

from dataclasses import replace

import pytest

from app.cases.model import (
    MAX_LISTED_ALERTS,
    MAX_LISTED_TXNS,
    CaseError,
    CaseFilter,
    case_id_for,
    join_update,
    parse_case_id,
    parse_closing,
    slot_of,
)
from tests.factories import alert


def test_an_alert_always_names_the_same_case_and_another_alert_another() -> None:
    assert case_id_for(alert(1)) == case_id_for(alert(1))
    assert case_id_for(alert(1)) != case_id_for(alert(2))
    assert parse_case_id(case_id_for(alert(1))) == case_id_for(alert(1))


def test_the_slot_is_the_rule_and_the_key_not_the_version() -> None:
    assert slot_of("r", "card_id", "tok") == slot_of("r", "card_id", "tok")
    assert slot_of("r", "card_id", "tok") != slot_of("r", "device_id", "tok")
    first, later = alert(1), replace(alert(2), rule_version=9)
    assert slot_of(first.rule_id, first.group_by, first.group_key) == slot_of(
        later.rule_id, later.group_by, later.group_key
    )


def test_a_join_lists_ids_only_while_there_is_room_and_counts_them_all() -> None:
    roomy = join_update(alert(1), 3, 10)
    assert "list_append(alert_ids" in roomy["UpdateExpression"]
    assert "list_append(txn_ids" in roomy["UpdateExpression"]
    full = join_update(alert(1), MAX_LISTED_ALERTS, MAX_LISTED_TXNS)
    assert "list_append" not in full["UpdateExpression"]
    assert "alert_count = alert_count + :one" in full["UpdateExpression"]
    nearly = join_update(alert(1), 0, MAX_LISTED_TXNS - 1)
    assert len(nearly["ExpressionAttributeValues"][":txn_ids"]["L"]) == 1
    assert full["ConditionExpression"] == "#status = :open"


def test_a_close_request_is_checked_field_by_field_and_card_numbers_are_masked() -> None:
    closing = parse_closing("fraud", " paid with 4111-1111-1111-1111 ", "ana 5500 0000 0000 0004")
    assert closing.note == "paid with ****-****-****-1111"
    assert closing.closed_by == "ana **** **** **** 0004"
    for args, field in (
        (("maybe", "n", "a"), "disposition"),
        (("fraud", "  ", "a"), "note"),
        (("fraud", "x" * 2001, "a"), "note"),
        (("fraud", "n", ""), "closed_by"),
        (("fraud", "n", None), "closed_by"),
    ):
        with pytest.raises(CaseError) as refused:
            parse_closing(*args)
        assert refused.value.field == field and refused.value.status == 400


def test_a_filter_refuses_what_no_case_can_match() -> None:
    with pytest.raises(CaseError, match="status"):
        CaseFilter(status="shut")
    with pytest.raises(CaseError, match="disposition"):
        CaseFilter(disposition="maybe")
    with pytest.raises(CaseError, match="card number"):
        CaseFilter(group_key="4111111111111111")
    with pytest.raises(CaseError, match="case_id"):
        parse_case_id("../etc")

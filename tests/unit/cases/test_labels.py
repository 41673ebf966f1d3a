"""app/cases/labels.py: a disposition's label, and chargebacks files read whole or refused."""

from __future__ import annotations

import json

import pytest

from app.cases.labels import LabelFileError, disposition_label, parse_chargebacks
from tests.factories import closed_case


def test_a_disposition_labels_its_case_with_the_payments_it_holds() -> None:
    case = closed_case()
    key, value = disposition_label(case).record()
    body = json.loads(value)
    assert key == f"case:{'c' * 24}"
    assert (body["label"], body["source"], body["by"]) == ("not_fraud", "disposition", "alice")
    assert body["txn_ids"] == list(case.txn_ids) and body["alert_ids"] == ["a1", "a2"]
    assert disposition_label(case).record() == (key, value)  # a repeat is the same record


def test_a_chargebacks_file_gives_one_fraud_label_per_payment() -> None:
    text = (
        "txn_id,date,reason\n"
        "t-1,2026-11-28,fraudulent: card 4111 1111 1111 1111 stolen\n"
        "\n"
        't-2,2026-11-29T10:00:00+01:00,"no authorisation, says the holder"\n'
        "t-1,2026-11-30,reported again\n"
    )
    found = {label.key: label.body for label in parse_chargebacks(text)}
    assert list(found) == ["txn:t-1", "txn:t-2"]
    assert found["txn:t-1"]["date"] == "2026-11-30"  # the file's last word on a payment
    assert found["txn:t-2"]["reason"] == "no authorisation, says the holder"
    assert {b["label"] for b in found.values()} == {"fraud"}
    masked = parse_chargebacks("txn_id,date,reason\nt-1,2026-11-28,card 4111111111111111\n")
    assert masked[0].body["reason"] == "card ************1111"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("txn,date,reason\nt-1,2026-11-28,x\n", "line 1: the header"),
        ("txn_id,date,reason\nt-1,28/11/2026,x\n", "line 2: date"),
        ("txn_id,date,reason\nt-1,2026-11-28T10:00:00,x\n", "line 2: date"),
        ("txn_id,date,reason\nt-1,2026-11-28,x\n,2026-11-28,y\n", "line 3: txn_id"),
        (
            "txn_id,date,reason\n4111111111111111,2026-11-28,x\n",
            "line 2: txn_id: looks like a card",
        ),
        ("txn_id,date,reason\nt-1,2026-11-28\n", "line 2: 2 columns"),
        ("", "line 1"),
    ],
)
def test_a_bad_line_refuses_the_whole_file_naming_it(text: str, named: str) -> None:
    with pytest.raises(LabelFileError, match=named):
        parse_chargebacks(text)

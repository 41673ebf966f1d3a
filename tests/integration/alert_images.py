"""The alerts-table item the sink writes, as DynamoDB's stream shows it (NEW_IMAGE)."""

from __future__ import annotations

from typing import Any


def new_image(alert_id: str, *, status: str = "active", card: str = "tok_4242") -> dict[str, Any]:
    return {
        "alert_id": {"S": alert_id},
        "rule_id": {"S": "high-value-burst"},
        "rule_version": {"N": "1"},
        "status": {"S": status},
        "group_by": {"S": "card_id"},
        "group_key": {"S": card},
        "txn_ids": {"L": [{"S": f"{alert_id}-t{i}"} for i in range(3)]},
        "aggregate_value": {"S": "3"},
        "amounts": {"L": [{"S": "1000.00"}, {"S": "1200.00"}, {"S": "4999.99"}]},
        "countries": {"L": [{"S": "FR"}, {"S": "DE"}, {"S": "DE"}]},
        "first_event_ts": {"S": "2026-11-28T14:03:07.250Z"},
        "last_event_ts": {"S": "2026-11-28T14:05:01.000Z"},
        "detected_at": {"S": "2026-11-28T14:05:01.020Z"},
        "trigger_produced_at_ms": {"N": "1795874701000"},
        "severity": {"S": "high"},
        "expires_at": {"N": "1795961101"},
    }

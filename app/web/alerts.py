"""GET /alerts: this worker's most recent alerts, newest first, filtered."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from faust.web import Request, Response, View

from app.detection.models import ms_from_iso
from app.web.cluster import my_url
from app.web.params import (
    BadParameter,
    bad_request,
    only,
    parse_card_id,
    parse_int,
    parse_rule_id,
    single,
)
from app.worker.stats import stats

ALERTS_LIMIT_DEFAULT, ALERTS_LIMIT_MAX = 50, 500


def _alert_summary(alert: Mapping[str, Any]) -> dict[str, Any]:
    detected_ms = ms_from_iso(alert.get("detected_at"))
    produced_ms = alert.get("trigger_produced_at_ms") or 0
    try:
        total = str(sum((Decimal(a) for a in alert.get("amounts", ())), Decimal(0)))
    except (InvalidOperation, TypeError):
        total = None
    return {
        **alert,
        "total_amount": total,
        # Decision latency of the alert: its trigger's produce time to detection.
        "latency_ms": None
        if detected_ms is None or produced_ms <= 0
        else max(0, detected_ms - int(produced_ms)),
    }


class AlertsView(View):
    """This worker's most recent alerts, newest first."""

    async def get(self, request: Request) -> Response:
        query = request.query
        try:
            only(query, ("card", "rule", "limit"))
            # An empty filter (``?card=``, as an HTML form sends it) means no filter.
            card_text, rule_text = single(query, "card"), single(query, "rule")
            card = parse_card_id(card_text, "card") if card_text else None
            rule = parse_rule_id(rule_text, "rule") if rule_text else None
            limit = parse_int(query, "limit", ALERTS_LIMIT_DEFAULT, 1, ALERTS_LIMIT_MAX)
        except BadParameter as exc:
            return bad_request(self, exc)
        picked = []
        for alert in reversed(stats.recent_alerts):
            if card is not None and alert.get("group_key") != card:
                continue
            if rule is not None and alert.get("rule_id") != rule:
                continue
            picked.append(_alert_summary(alert))
            if len(picked) >= limit:
                break
        return self.json(
            {"alerts": picked, "count": len(picked), "limit": limit, "served_by": my_url()}
        )

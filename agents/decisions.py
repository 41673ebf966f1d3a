"""What the detect and grouped agents share: publishing alerts (once), remembering them,
and the records that forward payments through the repartition topic.

Ordering matters for at-least-once: an alert is acknowledged by Kafka *before* the state
that consumed its events is written, so a crash can repeat an alert (same ``alert_id``,
deduplicated downstream) but never lose one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from agents.delivery import send_acknowledged
from app.delivery.published import PublishedAlerts, load_tail
from app.detection.forwarding import FORWARDED_BATCH_KEY, Forwarded, encode_forwarded
from app.detection.models import Alert
from app.detection.validation import Limits
from app.rules_admin.topic import bootstrap_servers
from app.worker.faust_app import alerts_topic, app, regroup_topic, settings
from app.worker.stats import stats
from app.worker.transport import RawRecord
from tables import (
    RECENT_ALERTS_PER_CARD,
    card_alerts,
)

log = logging.getLogger(__name__)

LIMITS = Limits(
    max_bytes=settings.max_payment_bytes,
    max_future_skew_ms=int(settings.max_future_skew_s * 1000),
    max_event_age_ms=int(settings.max_event_age_s * 1000),
    max_amount=settings.max_amount,
    max_amount_decimals=settings.max_amount_decimals,
)
LATENESS_MS = int(settings.allowed_lateness_s * 1000)
recent_alert_ids = PublishedAlerts()
REGROUP_TOPIC = regroup_topic.get_topic_name()


async def publish_alerts(alerts: tuple[Alert, ...]) -> None:
    """Send all of an event's alerts at once and wait for every acknowledgement."""
    if alerts:
        await asyncio.gather(*(publish_alert(alert) for alert in alerts))


@app.on_rebalance_complete.connect  # type: ignore[arg-type]
async def load_recent_alert_ids(sender: Any, **kwargs: Any) -> None:
    """Before streams resume (start-up, takeover), learn which alerts are already out."""
    try:
        await load_tail(bootstrap_servers(settings.broker), settings.topic_alerts, recent_alert_ids)
    except Exception:
        # Without the tail a replay may repeat an alert (same id, written once downstream);
        # it never loses one, so carry on loudly rather than block the rebalance.
        log.exception(
            "could not read the tail of %s; replayed alerts may repeat", settings.topic_alerts
        )


async def publish_alert(alert: Alert) -> None:
    """Send an alert and wait for Kafka's acknowledgement, retrying until it is acknowledged.

    Never gives up: the event stays unacknowledged (its offset uncommitted) while Kafka
    refuses the alert, and every failed attempt is logged and counted. An alert whose id
    is already on the topic (a replay after a crash) is not published again.
    """
    if alert.alert_id in recent_alert_ids:
        stats.alerts_already_published += 1
        log.info(
            "alert %s is already on %s; not publishing it again",
            alert.alert_id,
            settings.topic_alerts,
        )
        return
    await send_acknowledged(
        alerts_topic, alert.alert_id.encode(), alert.to_json(), f"alert {alert.alert_id}"
    )
    recent_alert_ids.add_alert(alert)
    stats.alerts[(alert.rule_id, alert.status)] += 1


def remember_alerts(card_id: str, alerts: tuple[Alert, ...]) -> None:
    bodies = [alert.to_dict() for alert in alerts if alert.group_by == "card_id"]
    stats.recent_alerts.extend(alert.to_dict() for alert in alerts)
    if bodies:
        card_alerts[card_id] = [*card_alerts[card_id], *bodies][-RECENT_ALERTS_PER_CARD:]


def forwarded_records(forwards: dict[int, list[Forwarded]]) -> list[RawRecord]:
    """The repartition topic's records for a batch's forwarded payments, by partition."""
    return [
        (REGROUP_TOPIC, FORWARDED_BATCH_KEY, value, partition)
        for partition, items in forwards.items()
        for value in encode_forwarded(items)
    ]


def partition_count() -> int:
    """The co-partitioned topics' partition count, settled at start-up from the topics
    (FraudApp.settle_partitions)."""
    return int(app.conf.topic_partitions)

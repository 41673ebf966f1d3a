"""Which worker owns a card, and asking it.

Routing a card. Faust's ``@app.table_route`` cannot be used here: it hashes the
key as the *table* serializes it (JSON, ``"tok_1"`` with quotes) and looks the
partition up among the changelog's owners. But a table write goes to the
changelog partition of the *source event* (``Table._send_changelog`` uses
``event.message.partition``), and producers key ``payments.raw`` by the raw card
bytes, so a card's state lives in partition ``murmur2(b"tok_1")``, which for
most cards is not ``murmur2(b'"tok_1"')``. Faust's ``topic_route`` would hash the
right bytes but asks the *producer's* metadata for the partition count, and the
worker's producer never writes to ``payments.raw``: its metadata may not hold
the topic at all. So :func:`locate_card` hashes the raw card bytes with Kafka's
default partitioner itself and finds the owner of that partition of the
table's changelog in the assignor's metadata (the changelog is co-partitioned
with ``payments.raw``, so that worker also consumes the card's payments).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from faust.types import TP
from faust.web import Request, Response, View
from yarl import URL

from app.detection.keys import card_partition
from app.web.params import error
from app.worker.faust_app import app, payments_topic
from tables import card_state

log = logging.getLogger(__name__)

# Set on a request one worker forwards to another, so the owner never forwards it again.
FORWARDED_BY = "X-Fraud-Forwarded-By"
FORWARD_TIMEOUT_S = 5.0


def _ident(url: Any) -> tuple[str, int]:
    parsed = URL(str(url))
    return (parsed.host or "", parsed.port or 80)


def my_url() -> str:
    return str(app.conf.canonical_url)


@dataclass(frozen=True, slots=True)
class CardOwner:
    partition: int
    owner: str | None  # canonical URL of the worker with the partition active (None: nobody yet)
    local: bool


def _changelog_owners() -> dict[str, list[int]]:
    """Owner URL -> the partitions of ``card_state``'s changelog it holds active."""
    topic = card_state.changelog_topic.get_topic_name()
    try:
        metadata = app.router.table_metadata(card_state.name)
    except Exception:  # no assignment yet
        return {}
    return {str(url): list(topics.get(topic, ())) for url, topics in metadata.items()}


def _partition_count(owners: Mapping[str, list[int]]) -> int:
    try:
        # What the consumer's group coordinator knows of payments.raw: the real count.
        count = app.consumer.topic_partitions(payments_topic.get_topic_name())
    except Exception:
        count = None
    if isinstance(count, int) and count > 0:
        return count
    held = {p for partitions in owners.values() for p in partitions}
    return max(held) + 1 if held else int(app.conf.topic_partitions)


def locate_card(card_id: str) -> CardOwner:
    owners = _changelog_owners()
    partition = card_partition(card_id, _partition_count(owners))
    owner = next((url for url, held in owners.items() if partition in held), None)
    local = owner is not None and _ident(owner) == _ident(my_url())
    return CardOwner(partition, owner, local)


def owns_partition(partition: int) -> bool:
    """This worker holds the card partition active (not just a standby copy)."""
    topic = card_state.changelog_topic.get_topic_name()
    try:
        return TP(topic, partition) in app.assignor.assigned_actives()
    except Exception:
        return False


def tables_recovered() -> bool:
    """Active table partitions are fully restored from their changelogs."""
    try:
        # ``recovery`` is on Faust's TableManager but not on its TableManagerT interface.
        recovery = getattr(app.tables, "recovery")  # noqa: B009
        return bool(recovery.completed.is_set()) and not app.in_recovery
    except Exception:
        return False


async def forward(view: View, request: Request, owner: str) -> Response:
    """Ask the owning worker and pass its answer through unchanged."""
    target = URL(owner.rstrip("/") + request.rel_url.raw_path_qs, encoded=True)
    try:
        async with app.http_client.get(
            target,
            headers={FORWARDED_BY: my_url(), "Accept": "application/json"},
            timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S),
        ) as response:
            body = await response.read()
            return view.bytes(
                body,
                status=response.status,
                headers={
                    "Content-Type": response.headers.get("Content-Type", "application/json"),
                    "X-Fraud-Routed-To": owner,
                },
            )
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("forwarding %s to %s failed: %r", request.rel_url, owner, exc)
        return error(view, 503, "the worker owning this card did not answer", owner=owner)

"""The idempotency table: one record per (sink, alert_id), written by Powertools.

Each sink gets its own key prefix, so "Slack posted, SNS failed" leaves a COMPLETED
Slack record behind and the redelivery only publishes to SNS. :func:`once_per_alert`
wraps a sink in that guard.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    IdempotentHookFunction,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord

# Powertools' defaults, spelled out because Terraform and the local stack create
# the table with exactly these names.
KEY_ATTR = "id"
EXPIRY_ATTR = "expiration"

SLACK_KEY_PREFIX = "fraud-notifier.slack"
SNS_KEY_PREFIX = "fraud-notifier.sns"


def persistence_layer(table_name: str, client: Any) -> DynamoDBPersistenceLayer:
    """A persistence layer on ``client`` (a boto3 DynamoDB client, possibly DynamoDB Local).

    One layer per sink: Powertools re-targets a layer's key prefix on every call,
    so sharing one between two decorated functions would rely on call order.
    """
    return DynamoDBPersistenceLayer(
        table_name=table_name, key_attr=KEY_ATTR, expiry_attr=EXPIRY_ATTR, boto3_client=client
    )


def idempotency_config(
    expires_after_s: int, on_replay: IdempotentHookFunction
) -> IdempotencyConfig:
    """Keyed on the alert's ``alert_id``; ``on_replay`` runs instead of an already-run sink."""
    return IdempotencyConfig(
        event_key_jmespath="alert_id",
        # Without a key Powertools would run the sink unguarded; an alert without
        # alert_id is refused earlier, this makes the guarantee not depend on that.
        raise_on_no_idempotency_key=True,
        expires_after_seconds=expires_after_s,
        response_hook=on_replay,
    )


def once_per_alert(
    sink: Callable[..., dict[str, Any]],
    *,
    key_prefix: str,
    table_name: str,
    client: Any,
    config: IdempotencyConfig,
) -> Callable[..., dict[str, Any]]:
    """``sink(alert=...)`` run at most once per alert; a repeat returns the stored receipt."""
    wrapped: Callable[..., dict[str, Any]] = idempotent_function(
        sink,
        data_keyword_argument="alert",
        persistence_store=persistence_layer(table_name, client),
        config=config,
        key_prefix=key_prefix,
    )
    return wrapped


def sink_of(record: DataRecord) -> str:
    """``"slack"`` or ``"sns"``: the sink an idempotency record belongs to."""
    # Keys read "<key_prefix>#<hash>", the prefix ending in the sink's name.
    return record.idempotency_key.split("#", 1)[0].rsplit(".", 1)[-1]


def ensure_table(client: Any, table_name: str, timeout_s: float = 30.0) -> bool:
    """Create the idempotency table (for local runs) if missing; True if it was created.

    On AWS, Terraform owns the table; this exists for DynamoDB Local and moto.
    """
    try:
        client.create_table(
            TableName=table_name,
            KeySchema=[{"AttributeName": KEY_ATTR, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": KEY_ATTR, "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    except client.exceptions.ResourceInUseException:
        return False
    deadline = time.monotonic() + timeout_s
    while client.describe_table(TableName=table_name)["Table"]["TableStatus"] != "ACTIVE":
        if time.monotonic() > deadline:
            raise TimeoutError(f"table {table_name} not ACTIVE after {timeout_s:g} s")
        time.sleep(0.2)
    # Old DynamoDB Local builds reject TTL; expired records are still ignored by
    # Powertools (it compares the expiry itself), they just are not swept.
    with contextlib.suppress(client.exceptions.ClientError):
        client.update_time_to_live(
            TableName=table_name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": EXPIRY_ATTR},
        )
    return True

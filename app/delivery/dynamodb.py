"""Pure helpers for the DynamoDB alert sink: item mapping and error classification.

No I/O here (``app.delivery.alert_writer`` owns the client and its threads), so
everything below is unit-tested without a table.

Items are built in DynamoDB's wire format (``{"S": ...}``, ``{"N": "..."}``) for the
low-level client, not through boto3's ``TypeSerializer``: that is exactly the shape the
notifier's parser (``lambdas.notifier.models.alert.alert_from_image``) reads from the stream,
and numbers never pass through ``float`` or ``Decimal`` on the way.
"""

from __future__ import annotations

import enum
import time
from datetime import datetime
from typing import Any

from botocore import exceptions as botocore_exceptions

from app.cases.model import RaceLostError
from app.detection.models import Alert

# The table's TTL attribute deletes a row this long after the alert was detected.
TTL_SECONDS = 24 * 3600
# The only condition the sink writes with: a replayed alert finds its row and changes nothing.
CONDITION_NEW_ALERT = "attribute_not_exists(alert_id)"

# Error codes DynamoDB (and the AWS SDK layer in front of it) use for "slow down".
THROTTLING_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "TooManyRequestsException",
    }
)
# Server-side failures that say nothing about the request itself. A
# TransactionConflict is a put racing someone's transaction on the same key.
TRANSIENT_CODES = frozenset(
    {
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "TransactionConflictException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
DUPLICATE_CODE = "ConditionalCheckFailedException"
# A transaction (an alert and its case, app.cases.store) cancelled for these item reasons
# heals by itself; the store has already handled a failed condition.
TRANSACTION_THROTTLED = frozenset({"ThrottlingError", "ProvisionedThroughputExceeded"})
TRANSACTION_TRANSIENT = frozenset({"None", "TransactionConflict", "ConditionalCheckFailed"})


class ErrorKind(enum.Enum):
    """What a failed PutItem means for the alert it carried."""

    DUPLICATE = "duplicate"  # the row already exists: a replay, i.e. success
    THROTTLED = "throttled"  # retry with backoff; capacity comes back by itself
    TRANSIENT = "transient"  # 5xx, connection refused/reset, timeout: retry with backoff
    # The request or the environment is wrong (validation, missing table, credentials,
    # permissions, a bug). Retrying cannot help until someone changes something, so the
    # sink says so at ERROR level and reports unhealthy at once; it still retries rather
    # than drop the alert, since every such cause is fixable without losing it.
    NON_RETRYABLE = "non_retryable"

    @property
    def retryable(self) -> bool:
        return self in (ErrorKind.THROTTLED, ErrorKind.TRANSIENT)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError, else the exception's class name (for logs)."""
    if isinstance(exc, botocore_exceptions.ClientError):
        code = exc.response.get("Error", {}).get("Code")
        if isinstance(code, str) and code:
            return code
    return type(exc).__name__


def classify_error(exc: BaseException) -> ErrorKind:
    """Sort a PutItem failure into duplicate / throttled / transient / non-retryable."""
    if isinstance(exc, botocore_exceptions.ClientError):
        code = error_code(exc)
        if code == DUPLICATE_CODE:
            return ErrorKind.DUPLICATE
        if code == "TransactionCanceledException":
            reasons = {
                str(reason.get("Code", "None"))
                for reason in exc.response.get("CancellationReasons") or []
            }
            if reasons & TRANSACTION_THROTTLED:
                return ErrorKind.THROTTLED
            return (
                ErrorKind.TRANSIENT if reasons <= TRANSACTION_TRANSIENT else ErrorKind.NON_RETRYABLE
            )
        if code in THROTTLING_CODES:
            return ErrorKind.THROTTLED
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in TRANSIENT_CODES or (isinstance(status, int) and status >= 500):
            return ErrorKind.TRANSIENT
        return ErrorKind.NON_RETRYABLE
    if isinstance(
        exc,
        (
            # Refused, reset, closed, timed out (connect or read), TLS hiccups.
            botocore_exceptions.ConnectionError,
            botocore_exceptions.HTTPClientError,
            botocore_exceptions.IncompleteReadError,
            # Instance/container credentials could not be fetched *this time*.
            botocore_exceptions.CredentialRetrievalError,
            ConnectionError,
            TimeoutError,
            # Another writer kept winning an alert's case slot (app.cases.store).
            RaceLostError,
        ),
    ):
        return ErrorKind.TRANSIENT
    return ErrorKind.NON_RETRYABLE


def epoch_ms_of(iso: str) -> int | None:
    """Epoch milliseconds of an ISO 8601 timestamp with a zone, or None if unparseable."""
    try:
        moment = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        # The pipeline writes only zoned UTC times; a naive one is ambiguous, so no guess.
        return None
    return int(moment.timestamp() * 1000)


def expires_at(detected_at: str, fallback_ms: int) -> int:
    """TTL value: whole epoch seconds of ``detected_at`` plus 24 h.

    ``fallback_ms`` (the write time) stands in for a ``detected_at`` that does not parse,
    so a malformed timestamp costs an exact TTL, not the alert.
    """
    detected_ms = epoch_ms_of(detected_at)
    base_ms = fallback_ms if detected_ms is None else detected_ms
    return base_ms // 1000 + TTL_SECONDS


def _strings(values: tuple[str, ...]) -> dict[str, Any]:
    # A list (L), not a string set (SS): order matters (txn_ids line up with amounts and
    # countries), duplicates are legal (two payments in one country) and SS cannot be empty.
    return {"L": [{"S": value} for value in values]}


def alert_item(alert: Alert, written_at_ms: int) -> dict[str, dict[str, Any]]:
    """The table row for ``alert``, in DynamoDB's attribute-value format. An alert of a
    kind other than an aggregate rule also has its ``kind``, the ``steps`` its events
    matched (a sequence's) and its ``explanation`` (a map of strings), as in its JSON."""
    item = _aggregate_item(alert, written_at_ms)
    if alert.kind != "aggregate":
        item["kind"] = {"S": alert.kind}
    if alert.steps:
        item["steps"] = {"L": [{"N": str(step)} for step in alert.steps]}
    if alert.explanation:
        item["explanation"] = {"M": {name: {"S": value} for name, value in alert.explanation}}
    return item


def _aggregate_item(alert: Alert, written_at_ms: int) -> dict[str, dict[str, Any]]:
    return {
        "alert_id": {"S": alert.alert_id},
        "rule_id": {"S": alert.rule_id},
        "rule_version": {"N": str(alert.rule_version)},
        "status": {"S": alert.status},
        "group_by": {"S": alert.group_by},
        "group_key": {"S": alert.group_key},
        "txn_ids": _strings(alert.txn_ids),
        "amounts": _strings(alert.amounts),
        "countries": _strings(alert.countries),
        # S, not N: an aggregate like a sum of amounts stays exactly as the detector wrote it.
        "aggregate_value": {"S": alert.aggregate_value},
        "first_event_ts": {"S": alert.first_event_ts},
        "last_event_ts": {"S": alert.last_event_ts},
        "detected_at": {"S": alert.detected_at},
        "trigger_txn_id": {"S": alert.trigger_txn_id},
        "trigger_produced_at_ms": {"N": str(alert.trigger_produced_at_ms)},
        "severity": {"S": alert.severity},
        "description": {"S": alert.description},
        "expires_at": {"N": str(expires_at(alert.detected_at, written_at_ms))},
        "written_at_ms": {"N": str(written_at_ms)},
        **explained(alert),
    }


def explained(alert: Alert) -> dict[str, dict[str, Any]]:
    """What explains an alert of a kind other than an aggregate (its JSON's ``kind``,
    ``steps``, ``explanation``), so the notifier can show it; nothing for an aggregate's."""
    item: dict[str, dict[str, Any]] = {}
    if alert.kind != "aggregate":
        item["kind"] = {"S": alert.kind}
    if alert.steps:
        item["steps"] = {"L": [{"N": str(step)} for step in alert.steps]}
    if alert.explanation:
        item["explanation"] = {"M": {name: {"S": value} for name, value in alert.explanation}}
    return item


def put_request(table: str, alert: Alert, written_at_ms: int | None = None) -> dict[str, Any]:
    """Keyword arguments of the conditional ``PutItem`` that writes ``alert`` once."""
    now_ms = int(time.time() * 1000) if written_at_ms is None else written_at_ms
    return {
        "TableName": table,
        "Item": alert_item(alert, now_ms),
        "ConditionExpression": CONDITION_NEW_ALERT,
        # Nothing back on success or on the condition failing: less to parse per alert.
        "ReturnValues": "NONE",
    }

"""A local stand-in for Lambda's DynamoDB Streams event source mapping.

Reads a table's stream (DynamoDB Local, moto or AWS: same ``dynamodbstreams`` API),
hands each batch to the notifier handler in the exact Lambda event shape, and on a
partial failure retries from the first failed record, as the event source mapping
does with ``ReportBatchItemFailures``. A record that still fails after
``--max-retries`` is logged and skipped (the mapping would send it to its on-failure
destination). Parent shards are drained before their children, so per-key order holds.

Runs in its own process, one plain loop in the main thread; SIGINT/SIGTERM finish
the current invocation and exit 0 (a second signal aborts it).

    python -m infra.local.stream_poller --endpoint http://127.0.0.1:8000 \\
        --table fraud_alerts [--batch-size 100]

Positions are not checkpointed: a restart reads the stream again from
``--starting-position`` and the handler's idempotency records keep it from
posting anything twice.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import FrameType
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from lambdas.notifier.adapters.aws import aws_client
from lambdas.notifier.adapters.idempotency import ensure_table

log = logging.getLogger("infra.local.stream_poller")

Handler = Callable[[dict[str, Any], LambdaContext], Any]

DEFAULT_HANDLER = "lambdas.notifier.handlers.notify:handler"
# GetRecords returns at most 1000 records per call.
MAX_BATCH_SIZE = 1000
_MAX_BACKOFF_S = 10.0


class LocalLambdaContext(LambdaContext):
    """The context object Lambda would pass, with a real countdown to the timeout."""

    def __init__(
        self,
        timeout_s: float,
        *,
        function_name: str = "fraud-notifier-local",
        region: str = "us-east-1",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._function_name = function_name
        self._function_version = "$LATEST"
        self._invoked_function_arn = (
            f"arn:aws:lambda:{region}:000000000000:function:{function_name}"
        )
        self._memory_limit_in_mb = 256
        self._aws_request_id = str(uuid.uuid4())
        self._log_group_name = f"/aws/lambda/{function_name}"
        self._log_stream_name = "local"
        self._clock = clock
        self._deadline = clock() + timeout_s

    def get_remaining_time_in_millis(self) -> int:  # type: ignore[override]
        return max(0, int((self._deadline - self._clock()) * 1000))


def _jsonable(value: Any) -> Any:
    """boto3's parsed response -> the JSON types Lambda puts in the event."""
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, datetime):
        return int(value.timestamp())
    return value


def to_lambda_record(record: Mapping[str, Any], stream_arn: str) -> dict[str, Any]:
    """A GetRecords record as it appears in a Lambda DynamoDB Streams event."""
    out: dict[str, Any] = {
        "eventID": record.get("eventID"),
        "eventName": record.get("eventName"),
        "eventVersion": record.get("eventVersion", "1.1"),
        "eventSource": record.get("eventSource", "aws:dynamodb"),
        "awsRegion": record.get("awsRegion"),
        "dynamodb": _jsonable(record.get("dynamodb", {})),
    }
    if "userIdentity" in record:
        out["userIdentity"] = _jsonable(record["userIdentity"])
    out["eventSourceARN"] = stream_arn
    return out


def first_failed_index(response: Any, records: Sequence[Mapping[str, Any]]) -> int | None:
    """Where to resume after an invocation: None if all succeeded, else an index.

    Like the event source mapping, a response that names a record not in the batch
    (or is not a partial-batch response at all) fails the whole batch.
    """
    if response is None:
        return None
    if not isinstance(response, Mapping):
        return 0
    failures = response.get("batchItemFailures")
    if not failures:
        return None
    sequence_numbers = [r["dynamodb"]["SequenceNumber"] for r in records]
    indexes: list[int] = []
    for failure in failures:
        ident = failure.get("itemIdentifier") if isinstance(failure, Mapping) else None
        if ident not in sequence_numbers:
            log.warning("invalid itemIdentifier %r: retrying the whole batch", ident)
            return 0
        indexes.append(sequence_numbers.index(ident))
    return min(indexes)


@dataclass
class _Shard:
    shard_id: str
    parent_id: str | None
    iterator: str | None = None
    last_sequence: str | None = None
    finished: bool = False
    # Shards that appear after start-up are children of split shards: read from the start.
    from_start: bool = False


class StreamPoller:
    """Poll every shard of one stream and invoke ``handler`` like the event source mapping."""

    def __init__(
        self,
        *,
        streams_client: Any,
        stream_arn: str,
        handler: Handler,
        region: str = "us-east-1",
        batch_size: int = 100,
        max_retries: int = 3,
        starting_position: str = "TRIM_HORIZON",
        invocation_timeout_s: float = 60.0,
        retry_backoff_s: float = 0.5,
        shard_refresh_s: float = 10.0,
        stop: threading.Event | None = None,
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}")
        if starting_position not in {"TRIM_HORIZON", "LATEST"}:
            raise ValueError("starting_position must be TRIM_HORIZON or LATEST")
        self._client = streams_client
        self.stream_arn = stream_arn
        self._handler = handler
        self._region = region
        self._batch_size = batch_size
        self._max_retries = max_retries
        self._starting_position = starting_position
        self._timeout_s = invocation_timeout_s
        self._backoff_s = retry_backoff_s
        self._refresh_s = shard_refresh_s
        self.stop = stop or threading.Event()
        self._shards: dict[str, _Shard] = {}
        self._refreshed_at: float | None = None
        self.invocations = 0
        self.skipped: list[str] = []

    def refresh_shards(self) -> None:
        """Learn about new shards (DynamoDB splits and rotates them every few hours)."""
        first_time = self._refreshed_at is None
        start: str | None = None
        while True:
            kwargs: dict[str, Any] = {"StreamArn": self.stream_arn}
            if start:
                kwargs["ExclusiveStartShardId"] = start
            description = self._client.describe_stream(**kwargs)["StreamDescription"]
            for shard in description.get("Shards", []):
                shard_id = shard["ShardId"]
                if shard_id in self._shards:
                    continue
                closed = "EndingSequenceNumber" in shard.get("SequenceNumberRange", {})
                self._shards[shard_id] = _Shard(
                    shard_id=shard_id,
                    parent_id=shard.get("ParentShardId"),
                    # At LATEST a shard closed before we started has nothing new.
                    finished=first_time and closed and self._starting_position == "LATEST",
                    from_start=not first_time,
                )
                log.debug("shard %s discovered", shard_id)
            start = description.get("LastEvaluatedShardId")
            if not start:
                break
        self._refreshed_at = time.monotonic()

    def _ready(self, shard: _Shard) -> bool:
        if shard.finished:
            return False
        parent = self._shards.get(shard.parent_id) if shard.parent_id else None
        return parent is None or parent.finished

    def _iterator(self, shard: _Shard) -> str:
        kwargs: dict[str, Any] = {"StreamArn": self.stream_arn, "ShardId": shard.shard_id}
        if shard.last_sequence is not None:
            kwargs["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER"
            kwargs["SequenceNumber"] = shard.last_sequence
        elif shard.from_start:
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        else:
            kwargs["ShardIteratorType"] = self._starting_position
        return str(self._client.get_shard_iterator(**kwargs)["ShardIterator"])

    def poll_once(self) -> int:
        """One round over the ready shards (one GetRecords each); returns records delivered."""
        if self._refreshed_at is None or time.monotonic() - self._refreshed_at >= self._refresh_s:
            self.refresh_shards()
        delivered = 0
        for shard in list(self._shards.values()):
            if self.stop.is_set():
                break
            if self._ready(shard):
                delivered += self._poll_shard(shard)
        return delivered

    def _poll_shard(self, shard: _Shard) -> int:
        try:
            if shard.iterator is None:
                shard.iterator = self._iterator(shard)
            response = self._client.get_records(
                ShardIterator=shard.iterator, Limit=self._batch_size
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code == "ExpiredIteratorException":
                shard.iterator = None  # resumes after last_sequence on the next round
            elif code == "TrimmedDataAccessException":
                log.warning(
                    "shard %s: position trimmed away; restarting at its horizon", shard.shard_id
                )
                shard.iterator, shard.last_sequence, shard.from_start = None, None, True
            elif code == "ResourceNotFoundException":
                log.warning("shard %s is gone", shard.shard_id)
                shard.finished = True
            else:
                raise
            return 0
        records = response.get("Records", [])
        if records and not self._deliver(records):
            # Stopped mid-batch: resume (in a later run) where the handler left off.
            shard.iterator = None
            return 0
        if records:
            shard.last_sequence = records[-1]["dynamodb"]["SequenceNumber"]
        shard.iterator = response.get("NextShardIterator")
        if shard.iterator is None:
            shard.finished = True
            log.info("shard %s closed and drained", shard.shard_id)
        return len(records)

    def _invoke(self, records: Sequence[Mapping[str, Any]]) -> int | None:
        event = {"Records": [to_lambda_record(r, self.stream_arn) for r in records]}
        context = LocalLambdaContext(self._timeout_s, region=self._region)
        self.invocations += 1
        try:
            response = self._handler(event, context)
        except Exception:
            log.exception("handler raised: the whole batch of %d failed", len(records))
            return 0
        return first_failed_index(response, records)

    def _deliver(self, records: Sequence[Mapping[str, Any]]) -> bool:
        """Invoke until every record succeeded or was given up on; False if stopped."""
        pending = list(records)
        attempts = 0
        while pending:
            failed = self._invoke(pending)
            if failed is None:
                return True
            if failed > 0:
                # Progress: what precedes the failed record is done, its retries start afresh.
                pending, attempts = pending[failed:], 0
            attempts += 1
            if attempts > self._max_retries:
                record = pending.pop(0)
                sequence = record["dynamodb"]["SequenceNumber"]
                self.skipped.append(sequence)
                log.error(
                    "giving up on record %s (SequenceNumber %s) after %d retries",
                    record.get("eventID"),
                    sequence,
                    self._max_retries,
                )
                attempts = 0
                continue
            delay = min(self._backoff_s * 2 ** (attempts - 1), _MAX_BACKOFF_S)
            if self.stop.wait(delay):
                return False
        return True

    def run(self, poll_interval_s: float = 0.5) -> None:
        """Poll until :attr:`stop` is set; transient AWS errors are logged and retried."""
        while not self.stop.is_set():
            try:
                delivered = self.poll_once()
            except (ClientError, BotoCoreError) as exc:
                log.warning("stream read failed (%s); retrying", exc)
                delivered = 0
                self.stop.wait(min(5.0, poll_interval_s * 4))
            if delivered == 0:
                self.stop.wait(poll_interval_s)


def find_stream_arn(
    dynamodb_client: Any, table: str, stop: threading.Event, wait_s: float = 1.0
) -> str | None:
    """The table's latest stream ARN, waiting for the table to exist (the local stack may
    still be creating it). None if stopped first; ValueError if the stream is off."""
    waiting_logged = False
    while not stop.is_set():
        try:
            description = dynamodb_client.describe_table(TableName=table)["Table"]
        except dynamodb_client.exceptions.ResourceNotFoundException:
            if not waiting_logged:
                log.info("waiting for table %s to exist", table)
                waiting_logged = True
            stop.wait(wait_s)
            continue
        except (ClientError, BotoCoreError) as exc:
            if not waiting_logged:
                log.info("waiting for DynamoDB (%s)", exc)
                waiting_logged = True
            stop.wait(wait_s)
            continue
        arn = description.get("LatestStreamArn")
        spec = description.get("StreamSpecification") or {}
        if not arn or spec.get("StreamEnabled") is False:
            raise ValueError(f"table {table} has no stream enabled (need NEW_IMAGE)")
        return str(arn)
    return None


def load_handler(spec: str) -> Handler:
    """``module:function`` -> the function."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"handler {spec!r} is not of the form module:function")
    handler = getattr(importlib.import_module(module_name), attr)
    if not callable(handler):
        raise ValueError(f"handler {spec!r} is not callable")
    return handler  # type: ignore[no-any-return]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= value <= MAX_BATCH_SIZE:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_BATCH_SIZE}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local.stream_poller",
        description="Feed a DynamoDB table's stream to the notifier handler, like Lambda would.",
    )
    parser.add_argument("--endpoint", help="DynamoDB endpoint URL (default: AWS)")
    parser.add_argument("--table", default="fraud_alerts", help="table (default: fraud_alerts)")
    parser.add_argument(
        "--batch-size", type=_positive_int, default=100, help="records per invocation (1-1000)"
    )
    parser.add_argument(
        "--region",
        default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
    )
    parser.add_argument(
        "--starting-position", choices=("TRIM_HORIZON", "LATEST"), default="TRIM_HORIZON"
    )
    parser.add_argument(
        "--max-retries", type=_non_negative_int, default=3, help="retries of a failing record"
    )
    parser.add_argument("--poll-interval", type=_positive_float, default=0.5, help="seconds")
    parser.add_argument(
        "--timeout", type=_positive_float, default=60.0, help="the Lambda timeout, seconds"
    )
    parser.add_argument("--handler", default=DEFAULT_HANDLER, help="module:function")
    parser.add_argument(
        "--create-idempotency-table",
        action="store_true",
        help="create $IDEMPOTENCY_TABLE on the endpoint if missing (local runs)",
    )
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING"))
    return parser


def _install_signal_handlers(stop: threading.Event) -> None:
    def on_signal(signum: int, frame: FrameType | None) -> None:
        # No logging here: the interrupted code may hold the logging lock.
        if stop.is_set():
            raise KeyboardInterrupt  # a second signal aborts the invocation in progress
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s stream-poller: %(message)s",
    )
    # botocore announces at INFO where it found credentials, on every client.
    logging.getLogger("botocore").setLevel(logging.WARNING)
    stop = threading.Event()
    _install_signal_handlers(stop)
    if args.endpoint:
        # The handler keeps its idempotency records in the same local DynamoDB.
        os.environ.setdefault("FRAUD_DYNAMODB_ENDPOINT", args.endpoint)
    try:
        handler = load_handler(args.handler)
        dynamodb = aws_client("dynamodb", args.region, args.endpoint)
        if args.create_idempotency_table:
            table = os.environ.get("IDEMPOTENCY_TABLE", "").strip()
            if not table:
                log.error("--create-idempotency-table needs IDEMPOTENCY_TABLE set")
                return 2
            idem_client = aws_client(
                "dynamodb", args.region, os.environ.get("FRAUD_DYNAMODB_ENDPOINT") or args.endpoint
            )
            if ensure_table(idem_client, table):
                log.info("created idempotency table %s", table)
        stream_arn = find_stream_arn(dynamodb, args.table, stop)
        if stream_arn is None:
            return 0
        poller = StreamPoller(
            streams_client=aws_client("dynamodbstreams", args.region, args.endpoint),
            stream_arn=stream_arn,
            handler=handler,
            region=args.region,
            batch_size=args.batch_size,
            max_retries=args.max_retries,
            starting_position=args.starting_position,
            invocation_timeout_s=args.timeout,
            stop=stop,
        )
        log.info("polling %s (batch size %d)", stream_arn, args.batch_size)
        poller.run(args.poll_interval)
    except KeyboardInterrupt:
        log.warning("aborted")
        return 130
    except (ValueError, ImportError) as exc:
        log.error("%s", exc)
        return 2
    log.info("stop requested; stopped after %d invocations", poller.invocations)
    return 0


if __name__ == "__main__":
    sys.exit(main())

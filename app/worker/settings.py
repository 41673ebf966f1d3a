"""Settings from the environment (prefix ``FRAUD_``).

Every value is parsed once at start-up; a bad value raises :class:`SettingsError`
naming the variable, so a worker never starts half-configured.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path

from app.detection.engine import MAX_KEY_EVENTS
from app.detection.rules import MAX_COUNT_THRESHOLD, MAX_KEY_HISTORY_WINDOW_S, MAX_WINDOW_S

PREFIX = "FRAUD_"


class SettingsError(ValueError):
    """A FRAUD_* environment variable holds a value the app cannot use."""


@dataclass(frozen=True)
class Settings:
    app_id: str = "fraud-detection"
    broker: str = "kafka://127.0.0.1:9092"
    store: str = "rocksdb://"
    datadir: Path = Path("./.cache/worker-data")
    web_bind: str = "127.0.0.1"
    # The host other workers reach this one's web server at (card lookups are forwarded
    # to the partition's owner); None: the bind address, or 127.0.0.1 for 0.0.0.0.
    web_host: str | None = None
    web_port: int = 6066
    # None: take the partition count of the existing payments topic (8 if it does not exist).
    partitions: int | None = None
    allowed_lateness_s: float = 60.0
    topic_payments: str = "payments.raw"
    topic_alerts: str = "fraud.alerts"
    topic_dlq: str = "payments.dlq"
    topic_rules: str = "fraud.rules"
    topic_labels: str = "fraud.labels"
    dynamodb_endpoint: str | None = None
    dynamodb_table: str = "fraud_alerts"
    # Cases (app.cases): active alerts of one rule on one key grouped, in a table of their own.
    cases_enabled: bool = True
    cases_table: str = "fraud_cases"
    aws_region: str = "us-east-1"
    max_payment_bytes: int = 16 * 1024
    # How far ahead of this worker's clock a payment's ts may be. A payment moves its key's
    # clock, and lateness is judged against that clock: were the bound larger than the
    # allowed lateness, one payment dated ahead would make the honest payments after it
    # late. 30 s leaves producers' clocks 30 s of drift and their payments 30 s in flight
    # within the default lateness of 60 s.
    max_future_skew_s: float = 30.0
    max_event_age_s: float = 30 * 24 * 3600.0
    processing_guarantee: str = "at_least_once"
    stall_timeout_s: float = 60.0
    # How long the broker may hold an idle fetch (Faust hard-codes 1500: app.worker.transport).
    fetch_max_wait_ms: int = 20
    # The least a fetch waits for, up to fetch_max_wait_ms (aiokafka's default: 1 byte).
    fetch_min_bytes: int = 4096
    topic_replication: int = 1
    sink_enabled: bool = True
    # Amounts beyond these bounds are dead-lettered (amount_out_of_range), so no rule
    # arithmetic can overflow or lose exactness: 10^12 with 6 decimals is 18 digits,
    # and Decimal's 28 digits hold the sum of 10^10 such amounts exactly.
    max_amount: Decimal = Decimal("1000000000000")
    max_amount_decimals: int = 6
    max_rules: int = 100
    # Events one key keeps at most, all rules together (app.detection.engine): the cost and
    # the state record of a busy key are bounded by it.
    max_key_events: int = MAX_KEY_EVENTS
    # How often the local stores forget keys the changelogs' retention forgets (tables.sweep).
    state_sweep_interval_s: float = 3600.0
    max_rule_bytes: int = 16 * 1024
    # How long a key's state outlives its last write (changelog retention.ms and the local
    # stores' sweep); None: the longest aggregate or sequence window (7 days), the allowed
    # lateness and a day. A rule whose window and the lateness exceed it is refused.
    state_retention_s: float | None = None
    # /healthz fails while more records than this are dead-lettered as internal_error
    # within a minute.
    max_internal_errors_per_minute: int = 10
    # The Parquet archive (agents.archive): a directory or s3://bucket/prefix.
    archive_enabled: bool = True
    archive_url: str = "./.cache/archive"
    archive_s3_endpoint: str | None = None
    # A partition's buffer rolls into files at this many bytes of records as received
    # (the Parquet files are several times smaller) or after this many seconds.
    archive_roll_bytes: int = 64 * 1024 * 1024
    archive_roll_s: float = 300.0
    # Kafka security (app.worker.kafka_security): PLAINTEXT locally; on Amazon MSK,
    # SASL_SSL with AWS_MSK_IAM (the task role) or SCRAM-SHA-512 (user and password).
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = field(default=None, repr=False)
    kafka_ca_file: str | None = None
    # The bearer token for rule writes over HTTP; None refuses them. Never printed.
    api_token: str | None = field(default=None, repr=False)
    # Named lists and suppressions (app.detection.lists).
    topic_lists: str = "fraud.lists"
    topic_suppressions: str = "fraud.suppressions"
    max_list_entries: int = 100_000


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


# A count rule may need up to MAX_COUNT_THRESHOLD events of one key; above 2 500 events a
# key's record would often outgrow Kafka's default message size (1 MiB) and shed events at
# every write instead (app.detection.engine.fit).
_MIN_KEY_EVENTS, _MAX_KEY_EVENTS = MAX_COUNT_THRESHOLD, 2500


def _key_events(text: str) -> int:
    value = int(text)
    if not _MIN_KEY_EVENTS <= value <= _MAX_KEY_EVENTS:
        raise ValueError(
            f"must be a whole number from {_MIN_KEY_EVENTS} (the largest count a rule may"
            f" need) to {_MAX_KEY_EVENTS} (a key's record must fit Kafka's 1 MiB message limit)"
        )
    return value


def _fetch_wait_ms(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 10_000:
        raise ValueError("must be an integer number of milliseconds from 0 to 10000")
    return value


def _fetch_min_bytes(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 1024 * 1024:
        raise ValueError("must be a whole number of bytes from 1 to 1048576 (1 MiB)")
    return value


def _decimal_places(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 12:
        raise ValueError("must be a whole number of decimal places from 0 to 12")
    return value


def _amount_bound(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError("is not a decimal number") from None
    if not value.is_finite() or not 0 < value <= Decimal("1e15"):
        raise ValueError("must be a decimal number above 0 and at most 1e15")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        # Faust refuses 0 too, but with a traceback that does not name the variable.
        raise ValueError("must be a TCP port between 1 and 65535")
    return value


def _non_negative_seconds(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise ValueError("must be a finite number of seconds >= 0")
    return value


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a finite number of seconds > 0")
    return value


def _archive_url(text: str) -> str:
    if re.match(r"^[a-z][a-z0-9+.-]*://", text):
        if not re.fullmatch(r"(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/\S*)?|file:///\S*)", text):
            raise ValueError("must be a directory, file:///path or s3://bucket/prefix")
    elif any(c in text for c in "\n\r\0"):
        raise ValueError("is not a directory path")
    return text


def _security_protocol(text: str) -> str:
    if text not in {"PLAINTEXT", "SSL", "SASL_SSL"}:
        raise ValueError("must be PLAINTEXT, SSL or SASL_SSL")
    return text


def _sasl_mechanism(text: str) -> str:
    if text not in {"AWS_MSK_IAM", "SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"}:
        raise ValueError("must be AWS_MSK_IAM, SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN")
    return text


def _readable_file(text: str) -> str:
    if not os.path.isfile(text) or not os.access(text, os.R_OK):
        raise ValueError("is not a readable file")
    return text


def _broker_url(text: str) -> str:
    urls = [part.strip() for part in text.split(";") if part.strip()]
    if not urls:
        raise ValueError("is empty")
    for url in urls:
        if not re.fullmatch(r"(kafka|aiokafka)://[^\s/:]+:\d+", url):
            raise ValueError(f"{url!r} is not of the form kafka://host:port")
    return ";".join(urls)


def _store_url(text: str) -> str:
    if text not in {"rocksdb://", "memory://"}:
        raise ValueError("must be 'rocksdb://' or 'memory://' ('rocksdict://' crashes Faust 0.15)")
    return text


def _topic(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", text):
        raise ValueError("is not a legal Kafka topic name")
    return text


def _http_url(text: str) -> str:
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", text):
        raise ValueError("must be an http(s):// URL")
    return text


def _guarantee(text: str) -> str:
    if text not in {"at_least_once", "exactly_once"}:
        raise ValueError("must be 'at_least_once' or 'exactly_once'")
    return text


def _bind_address(text: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise ValueError("must be a host name or IP address")
    return text


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in {"true", "1", "yes"}:
        return True
    if lowered in {"false", "0", "no"}:
        return False
    raise ValueError("must be one of true/false/1/0/yes/no")


def _dynamodb_table(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{3,255}", text):
        raise ValueError("is not a DynamoDB table name (3-255 of letters, digits, '_', '-', '.')")
    return text


def _aws_region(text: str) -> str:
    if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d+", text):
        raise ValueError("is not an AWS region name such as eu-west-1")
    return text


def _secret(text: str) -> str:
    if any(c.isspace() for c in text):
        raise ValueError("must not contain white space")
    return text


def _app_id(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", text):
        raise ValueError("may hold only letters, digits, '.', '_' and '-'")
    return text


@dataclass(frozen=True)
class Variable:
    """One ``FRAUD_*`` variable: its name (without the prefix), the :class:`Settings` field
    it sets, the parser that checks it and what it means. ``docs/reference/settings.md`` is
    generated from these and the fields' defaults (``infra/docs/hooks.py``)."""

    name: str
    attr: str
    parse: Callable[[str], object]
    description: str


# Every FRAUD_* variable, declared here once: the worker reads these and no other, and the
# settings page lists exactly these (a unit test holds the generator to it).
DECLARED: tuple[Variable, ...] = (
    Variable(
        "APP_ID",
        "app_id",
        _app_id,
        "The Faust app id: the consumer group, and the prefix of the changelog and"
        " repartition topics. Two deployments must never share one.",
    ),
    Variable(
        "BROKER",
        "broker",
        _broker_url,
        "Kafka bootstrap servers as `kafka://host:port`; `;` separates several.",
    ),
    Variable(
        "STORE",
        "store",
        _store_url,
        "The table store: `rocksdb://` (rocksdict) or `memory://`.",
    ),
    Variable("DATADIR", "datadir", Path, "Where RocksDB and Faust keep their state."),
    Variable(
        "WEB_BIND",
        "web_bind",
        _bind_address,
        "The address the worker's web server listens on; never `0.0.0.0` unless you say so.",
    ),
    Variable("WEB_PORT", "web_port", _port, "The port of the worker's web server."),
    Variable(
        "WEB_HOST",
        "web_host",
        _bind_address,
        "The name other workers reach this one at (a card lookup goes to the partition's"
        " owner); set it per container, e.g. the service name. Unset: the bind address"
        " (127.0.0.1 when bound to `0.0.0.0`).",
    ),
    Variable(
        "PARTITIONS",
        "partitions",
        _positive_int,
        "Partitions of the topics and tables. Unset: the existing payments topic's count"
        " (8 when it does not exist yet). A value that disagrees with the payments topic, or"
        " a changelog or repartition topic whose count disagrees, stops the worker at start-up"
        " with one line naming both numbers.",
    ),
    Variable(
        "ALLOWED_LATENESS",
        "allowed_lateness_s",
        _non_negative_seconds,
        "Seconds of event-time disorder accepted per key; a payment later than that behind"
        " its key's newest goes to the DLQ as `late_event`.",
    ),
    Variable("TOPIC_PAYMENTS", "topic_payments", _topic, "The payments topic."),
    Variable("TOPIC_ALERTS", "topic_alerts", _topic, "The alerts topic."),
    Variable("TOPIC_DLQ", "topic_dlq", _topic, "The dead-letter topic."),
    Variable(
        "TOPIC_RULES", "topic_rules", _topic, "The rules topic (compacted, keyed by rule id)."
    ),
    Variable(
        "TOPIC_LABELS",
        "topic_labels",
        _topic,
        "The labels topic (compacted, keyed by what a label labels: `case:<id>` for a"
        " disposition, `txn:<id>` for a chargeback).",
    ),
    Variable(
        "DYNAMODB_ENDPOINT",
        "dynamodb_endpoint",
        _http_url,
        "Another DynamoDB endpoint, e.g. `http://127.0.0.1:8000` for DynamoDB Local. Unset: AWS.",
    ),
    Variable("DYNAMODB_TABLE", "dynamodb_table", _dynamodb_table, "The alerts table."),
    Variable(
        "CASES_ENABLED",
        "cases_enabled",
        _bool,
        "Group active alerts into cases as the sink writes them: the first alert of a rule on"
        " a key opens a case (and pages), later ones join it until it is closed.",
    ),
    Variable(
        "CASES_TABLE",
        "cases_table",
        _dynamodb_table,
        "The cases table (no TTL: cases outlive the alerts). The sink, the cases API and"
        " `faust -A app cases` use it.",
    ),
    Variable("AWS_REGION", "aws_region", _aws_region, "The AWS region, e.g. `eu-west-1`."),
    Variable(
        "MAX_PAYMENT_BYTES",
        "max_payment_bytes",
        _positive_int,
        "A larger record goes to the DLQ as `oversize`.",
    ),
    Variable(
        "MAX_FUTURE_SKEW",
        "max_future_skew_s",
        _non_negative_seconds,
        "Seconds a payment's `ts` may be ahead of the worker's clock; more goes to the DLQ as"
        " `ts_in_future`. At most `FRAUD_ALLOWED_LATENESS` (checked at start-up): a payment"
        " dated ahead moves its key's clock, and must not make the honest payments after it"
        " late.",
    ),
    Variable(
        "MAX_EVENT_AGE",
        "max_event_age_s",
        _non_negative_seconds,
        "Seconds a payment's `ts` may be behind the worker's clock; older goes to the DLQ.",
    ),
    Variable(
        "PROCESSING_GUARANTEE",
        "processing_guarantee",
        _guarantee,
        "`at_least_once` (the supported mode) or `exactly_once` (kept for experiments: after"
        " a crash its local store can hold writes of an aborted transaction).",
    ),
    Variable(
        "STALL_TIMEOUT",
        "stall_timeout_s",
        _non_negative_seconds,
        "Seconds an assigned partition may hold records waiting without a commit before"
        " `/healthz` fails, whatever holds it up (a recovery or a rebalance included: set it"
        " above the longest recovery you expect).",
    ),
    Variable(
        "FETCH_MAX_WAIT_MS",
        "fetch_max_wait_ms",
        _fetch_wait_ms,
        "Milliseconds (0-10000) the broker may hold the worker's fetch when none of its"
        " partitions has new records. Faust hard-codes 1500, which made runs settle into a"
        " 1.15 s median latency at random. An idle worker fetches this often: at 20 ms that is"
        " most of its CPU (about 1.2 CPU-s a minute; 0.5 at 100 ms), but a fetch that went out"
        " without the busy partitions holds them back as long (at 100 ms the decision p99 at"
        " 10 000/s measured 29-66 ms, against 18-23 ms at 20).",
    ),
    Variable(
        "FETCH_MIN_BYTES",
        "fetch_min_bytes",
        _fetch_min_bytes,
        "Bytes (1-1048576) the broker gathers for the worker's fetch before it answers, or"
        " less once `FRAUD_FETCH_MAX_WAIT_MS` has passed. With 1 a slow stream is fetched a"
        " few payments at a time, and each fetch costs its round trip and a commit of every"
        " partition batch: at 1 000 payments/s that was most of the worker's CPU. 4096 (about"
        " 13 payments) makes a fetch wait ~14 ms at 1 000/s (70 fetches a second; decision p99"
        " 19 ms, where 8192 waited the full 20 ms and measured 25-26) and under 2 ms at"
        " 10 000/s; a payment waits at most that long more.",
    ),
    Variable(
        "TOPIC_REPLICATION",
        "topic_replication",
        _positive_int,
        "Replication factor of the topics the app creates.",
    ),
    Variable(
        "SINK_ENABLED",
        "sink_enabled",
        _bool,
        "Run the DynamoDB sink agent in this worker (`true`/`false`, `1`/`0`, `yes`/`no`).",
    ),
    Variable(
        "MAX_AMOUNT",
        "max_amount",
        _amount_bound,
        "A larger amount goes to the DLQ as `amount_out_of_range` (above 0, at most 1e15);"
        " within these bounds no rule arithmetic can overflow or round.",
    ),
    Variable(
        "MAX_AMOUNT_DECIMALS",
        "max_amount_decimals",
        _decimal_places,
        "An amount with more decimal places (0-12) goes to the DLQ as `amount_out_of_range`.",
    ),
    Variable(
        "MAX_RULES",
        "max_rules",
        _positive_int,
        "Rules in force at most; more is refused by the CLI (exit 1), the API (409) and the"
        " workers (a poison record).",
    ),
    Variable(
        "MAX_KEY_EVENTS",
        "max_key_events",
        _key_events,
        f"Events one key keeps at most, all its rules together ({_MIN_KEY_EVENTS}-"
        f"{_MAX_KEY_EVENTS}): bounds a busy key's cost and its changelog record. Past it the"
        " oldest are forgotten and counted in `fraud_key_events_evicted_total`.",
    ),
    Variable(
        "STATE_SWEEP_INTERVAL",
        "state_sweep_interval_s",
        _positive_seconds,
        "Seconds between sweeps of the local state stores: a key not written for the state"
        " retention (`FRAUD_STATE_RETENTION`) is forgotten"
        " locally as its changelog forgets it, and counted in `fraud_state_keys_swept_total`.",
    ),
    Variable(
        "STATE_RETENTION",
        "state_retention_s",
        _positive_seconds,
        "Seconds a key's state outlives its last write: the changelogs' `retention.ms` and"
        " the local stores' sweep. Unset: the longest aggregate or sequence window (7 days),"
        " the allowed lateness and a day. At least those 7 days and the lateness (checked at"
        " start-up); a history or first-seen rule whose window and the lateness exceed it is"
        " refused naming `window` (CLI, API, workers). Set it above your longest window (e.g."
        " 5 270 400 for 60 days) for a card quiet for most of it to keep its history.",
    ),
    Variable(
        "MAX_RULE_BYTES",
        "max_rule_bytes",
        _positive_int,
        "The size of one rule's JSON at most; more is refused by the CLI (exit 1), the API"
        " (413) and the workers (a poison record).",
    ),
    Variable(
        "MAX_INTERNAL_ERRORS_PER_MINUTE",
        "max_internal_errors_per_minute",
        _positive_int,
        "`/healthz` fails while more records than this were dead-lettered as"
        " `internal_error` within the last minute.",
    ),
    Variable(
        "ARCHIVE_ENABLED",
        "archive_enabled",
        _bool,
        "Run the Parquet archive's consumer (`agents/archive.py`) in this worker.",
    ),
    Variable(
        "ARCHIVE_URL",
        "archive_url",
        _archive_url,
        "Where the archive goes: a directory, `file:///path` or `s3://bucket/prefix`"
        " (credentials from the usual AWS chain).",
    ),
    Variable(
        "ARCHIVE_S3_ENDPOINT",
        "archive_s3_endpoint",
        _http_url,
        "An S3-compatible server instead of AWS, e.g. `http://127.0.0.1:7070`. Unset: AWS.",
    ),
    Variable(
        "ARCHIVE_ROLL_BYTES",
        "archive_roll_bytes",
        _positive_int,
        "A partition's buffer rolls into files at this many bytes of records as received"
        " (the Parquet files are several times smaller).",
    ),
    Variable(
        "ARCHIVE_ROLL_SECONDS",
        "archive_roll_s",
        _positive_seconds,
        "A partition's buffer rolls into files after this many seconds at the latest.",
    ),
    Variable(
        "KAFKA_SECURITY_PROTOCOL",
        "kafka_security_protocol",
        _security_protocol,
        "`PLAINTEXT`, `SSL` or `SASL_SSL` (Amazon MSK: `SASL_SSL`); used by Faust's consumer"
        " and producer and by every Kafka client the app opens itself.",
    ),
    Variable(
        "KAFKA_SASL_MECHANISM",
        "kafka_sasl_mechanism",
        _sasl_mechanism,
        "Required with `SASL_SSL`, refused without it: `AWS_MSK_IAM` (tokens signed with the"
        " AWS credential chain, e.g. the ECS task role), `SCRAM-SHA-512`, `SCRAM-SHA-256` or"
        " `PLAIN`.",
    ),
    Variable(
        "KAFKA_SASL_USERNAME",
        "kafka_sasl_username",
        _secret,
        "The user for SCRAM and PLAIN (required with them).",
    ),
    Variable(
        "KAFKA_SASL_PASSWORD",
        "kafka_sasl_password",
        _secret,
        "The password for SCRAM and PLAIN (required with them).",
    ),
    Variable(
        "KAFKA_CA_FILE",
        "kafka_ca_file",
        _readable_file,
        "A PEM bundle to trust instead of the system's CAs (MSK's certificates chain to"
        " public roots).",
    ),
    Variable(
        "API_TOKEN",
        "api_token",
        _secret,
        "The bearer token for rule writes, backtests and shadow-rule evidence over HTTP."
        " Unset: those are refused (403).",
    ),
    Variable(
        "TOPIC_LISTS",
        "topic_lists",
        _topic,
        "The lists topic (compacted, keyed `<list>:<value>`; a tombstone removes the entry).",
    ),
    Variable(
        "TOPIC_SUPPRESSIONS",
        "topic_suppressions",
        _topic,
        "The suppressions topic (compacted, keyed `<rule_id>:<key>`; a tombstone removes the"
        " suppression).",
    ),
    Variable(
        "MAX_LIST_ENTRIES",
        "max_list_entries",
        _positive_int,
        "List entries and suppressions held at most, all together (each about 450 bytes with a"
        " short reason, in every worker). A new one past it is refused by the CLI (exit 1), the API"
        " (409) and the workers (a poison record), after forgetting entries expired longer ago than"
        " `FRAUD_MAX_EVENT_AGE`.",
    ),
)
# (name, attr, parser) of each variable: the shape tests/infra/test_terraform.py unpacks.
VARIABLES: tuple[tuple[str, str, Callable[[str], object]], ...] = tuple(
    (v.name, v.attr, v.parse) for v in DECLARED
)
# Never printed, not even in the message about a bad value.
HIDDEN = frozenset({"api_token", "kafka_sasl_password"})


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the FRAUD_* variables of ``env`` (default: the process environment)."""
    source = os.environ if env is None else env
    values: dict[str, object] = {}
    for variable in DECLARED:
        name, attr, parse = variable.name, variable.attr, variable.parse
        raw = source.get(PREFIX + name)
        if raw is None or raw == "":
            continue
        try:
            values[attr] = parse(raw.strip())
        except ValueError as exc:
            reason = str(exc) or "is invalid"
            if reason.startswith("invalid literal") or reason.startswith("could not convert"):
                reason = "is not a number"
            shown = "(hidden)" if attr in HIDDEN else repr(raw)
            raise SettingsError(f"{PREFIX}{name}={shown}: {reason}") from None
    loaded = replace(Settings(), **values)  # type: ignore[arg-type]
    _check_kafka_security(loaded)
    _check_clock_bounds(loaded)
    _check_state_retention(loaded)
    return loaded


def state_retention_ms(settings: Settings) -> int:
    """How long a key's state outlives its last write (``FRAUD_STATE_RETENTION``)."""
    if settings.state_retention_s is not None:
        return int(settings.state_retention_s * 1000)
    return int((MAX_WINDOW_S + settings.allowed_lateness_s + 24 * 3600) * 1000)


def _check_state_retention(settings: Settings) -> None:
    """Every aggregate or sequence rule (windows up to 7 days) must keep its state."""
    retention = settings.state_retention_s
    if retention is None:
        return
    least = MAX_WINDOW_S + settings.allowed_lateness_s
    if retention < least:
        raise SettingsError(
            f"{PREFIX}STATE_RETENTION={retention:g}: must be at least {least:g}, the longest"
            f" aggregate or sequence window ({MAX_WINDOW_S} s) and {PREFIX}ALLOWED_LATENESS"
        )
    if retention > MAX_KEY_HISTORY_WINDOW_S + settings.allowed_lateness_s + 24 * 3600:
        raise SettingsError(
            f"{PREFIX}STATE_RETENTION={retention:g}: more than the longest window a rule may"
            f" have ({MAX_KEY_HISTORY_WINDOW_S} s), the allowed lateness and a day"
        )


def _check_clock_bounds(settings: Settings) -> None:
    """A payment dated ahead moves its key's clock by up to the skew it is allowed; past the
    allowed lateness, that would make every honest payment behind it late."""
    if settings.max_future_skew_s > settings.allowed_lateness_s:
        raise SettingsError(
            f"{PREFIX}MAX_FUTURE_SKEW={settings.max_future_skew_s:g}: must not exceed"
            f" {PREFIX}ALLOWED_LATENESS={settings.allowed_lateness_s:g}, or one payment dated"
            " ahead could make the honest payments after it late"
        )


def _check_kafka_security(settings: Settings) -> None:
    """The FRAUD_KAFKA_* settings that only make sense together."""
    protocol, mechanism = settings.kafka_security_protocol, settings.kafka_sasl_mechanism
    if protocol == "SASL_SSL" and mechanism is None:
        raise SettingsError(
            f"{PREFIX}KAFKA_SASL_MECHANISM: required with {PREFIX}KAFKA_SECURITY_PROTOCOL=SASL_SSL"
            " (AWS_MSK_IAM, SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN)"
        )
    if protocol != "SASL_SSL" and mechanism is not None:
        raise SettingsError(
            f"{PREFIX}KAFKA_SASL_MECHANISM={mechanism!r}: needs"
            f" {PREFIX}KAFKA_SECURITY_PROTOCOL=SASL_SSL, not {protocol}"
        )
    if mechanism not in (None, "AWS_MSK_IAM"):
        for name in ("username", "password"):
            if getattr(settings, f"kafka_sasl_{name}") is None:
                raise SettingsError(
                    f"{PREFIX}KAFKA_SASL_{name.upper()}: required with"
                    f" {PREFIX}KAFKA_SASL_MECHANISM={mechanism}"
                )

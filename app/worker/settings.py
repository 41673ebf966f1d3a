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
from app.detection.rules import MAX_COUNT_THRESHOLD

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
    dynamodb_endpoint: str | None = None
    dynamodb_table: str = "fraud_alerts"
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
    max_rule_bytes: int = 16 * 1024
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


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


# A key's record must fit Kafka's default message size limit (1 MiB) whatever its events
# hold: an event's entry encodes to at most ~330 bytes (validation bounds its fields), and
# a count rule may need up to MAX_COUNT_THRESHOLD events of one key.
_MIN_KEY_EVENTS, _MAX_KEY_EVENTS = MAX_COUNT_THRESHOLD, 2500


def _key_events(text: str) -> int:
    value = int(text)
    if not _MIN_KEY_EVENTS <= value <= _MAX_KEY_EVENTS:
        raise ValueError(
            f"must be a whole number from {_MIN_KEY_EVENTS} (the largest count a rule may"
            f" need) to {_MAX_KEY_EVENTS} (a key's record must fit Kafka's 1 MiB limit)"
        )
    return value


def _fetch_wait_ms(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 10_000:
        raise ValueError("must be an integer number of milliseconds from 0 to 10000")
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


# Every FRAUD_* variable: its name (without the prefix), the Settings field it sets and
# the parser that checks it. The README's settings table lists exactly these (a unit test
# compares them), so a new setting is declared here once.
VARIABLES: tuple[tuple[str, str, Callable[[str], object]], ...] = (
    ("APP_ID", "app_id", _app_id),
    ("BROKER", "broker", _broker_url),
    ("STORE", "store", _store_url),
    ("DATADIR", "datadir", Path),
    ("WEB_BIND", "web_bind", _bind_address),
    ("WEB_PORT", "web_port", _port),
    ("WEB_HOST", "web_host", _bind_address),
    ("PARTITIONS", "partitions", _positive_int),
    ("ALLOWED_LATENESS", "allowed_lateness_s", _non_negative_seconds),
    ("TOPIC_PAYMENTS", "topic_payments", _topic),
    ("TOPIC_ALERTS", "topic_alerts", _topic),
    ("TOPIC_DLQ", "topic_dlq", _topic),
    ("TOPIC_RULES", "topic_rules", _topic),
    ("DYNAMODB_ENDPOINT", "dynamodb_endpoint", _http_url),
    ("DYNAMODB_TABLE", "dynamodb_table", _dynamodb_table),
    ("AWS_REGION", "aws_region", _aws_region),
    ("MAX_PAYMENT_BYTES", "max_payment_bytes", _positive_int),
    ("MAX_FUTURE_SKEW", "max_future_skew_s", _non_negative_seconds),
    ("MAX_EVENT_AGE", "max_event_age_s", _non_negative_seconds),
    ("PROCESSING_GUARANTEE", "processing_guarantee", _guarantee),
    ("STALL_TIMEOUT", "stall_timeout_s", _non_negative_seconds),
    ("FETCH_MAX_WAIT_MS", "fetch_max_wait_ms", _fetch_wait_ms),
    ("TOPIC_REPLICATION", "topic_replication", _positive_int),
    ("SINK_ENABLED", "sink_enabled", _bool),
    ("MAX_AMOUNT", "max_amount", _amount_bound),
    ("MAX_AMOUNT_DECIMALS", "max_amount_decimals", _decimal_places),
    ("MAX_RULES", "max_rules", _positive_int),
    ("MAX_KEY_EVENTS", "max_key_events", _key_events),
    ("MAX_RULE_BYTES", "max_rule_bytes", _positive_int),
    ("MAX_INTERNAL_ERRORS_PER_MINUTE", "max_internal_errors_per_minute", _positive_int),
    ("ARCHIVE_ENABLED", "archive_enabled", _bool),
    ("ARCHIVE_URL", "archive_url", _archive_url),
    ("ARCHIVE_S3_ENDPOINT", "archive_s3_endpoint", _http_url),
    ("ARCHIVE_ROLL_BYTES", "archive_roll_bytes", _positive_int),
    ("ARCHIVE_ROLL_SECONDS", "archive_roll_s", _positive_seconds),
    ("KAFKA_SECURITY_PROTOCOL", "kafka_security_protocol", _security_protocol),
    ("KAFKA_SASL_MECHANISM", "kafka_sasl_mechanism", _sasl_mechanism),
    ("KAFKA_SASL_USERNAME", "kafka_sasl_username", _secret),
    ("KAFKA_SASL_PASSWORD", "kafka_sasl_password", _secret),
    ("KAFKA_CA_FILE", "kafka_ca_file", _readable_file),
    ("API_TOKEN", "api_token", _secret),
)
# Never printed, not even in the message about a bad value.
HIDDEN = frozenset({"api_token", "kafka_sasl_password"})


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the FRAUD_* variables of ``env`` (default: the process environment)."""
    source = os.environ if env is None else env
    values: dict[str, object] = {}
    for name, attr, parse in VARIABLES:
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
    return loaded


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

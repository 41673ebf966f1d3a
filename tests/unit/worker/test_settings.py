"""app.worker.settings: settings come from FRAUD_* variables; a bad value is refused,
naming the variable."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from decimal import Decimal

import pytest
from mkdocs.exceptions import PluginError

from app.worker.settings import DECLARED, PREFIX, Settings, SettingsError, load_settings
from infra.docs.hooks import (
    NOTIFIER_MARKER,
    SETTINGS_PAGE,
    WORKER_MARKER,
    expand,
    notifier_variables_table,
    worker_settings_table,
)
from lambdas.notifier.models.env import VARIABLES as NOTIFIER_VARIABLES
from tests.docs import DOCS, REPO, first_column, page


def test_defaults_bind_loopback_and_use_rocksdb() -> None:
    settings = load_settings({})
    assert settings.web_bind == "127.0.0.1"
    assert settings.store == "rocksdb://"
    assert settings.allowed_lateness_s == 60
    assert (
        settings.topic_payments,
        settings.topic_alerts,
        settings.topic_dlq,
        settings.topic_rules,
    ) == ("payments.raw", "fraud.alerts", "payments.dlq", "fraud.rules")


def test_values_are_parsed() -> None:
    settings = load_settings(
        {
            "FRAUD_BROKER": "kafka://127.0.0.1:9093",
            "FRAUD_STORE": "memory://",
            "FRAUD_PARTITIONS": "4",
            "FRAUD_ALLOWED_LATENESS": "30",
            "FRAUD_WEB_PORT": "7000",
            "FRAUD_TOPIC_PAYMENTS": "p.raw",
            "FRAUD_DYNAMODB_ENDPOINT": "http://127.0.0.1:8000",
        }
    )
    assert settings.broker == "kafka://127.0.0.1:9093"
    assert settings.partitions == 4
    assert settings.allowed_lateness_s == 30.0
    assert settings.topic_payments == "p.raw"
    assert settings.dynamodb_endpoint == "http://127.0.0.1:8000"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("FRAUD_PARTITIONS", "zero", "not a number"),
        ("FRAUD_PARTITIONS", "0", "positive"),
        ("FRAUD_WEB_PORT", "70000", "TCP port"),
        ("FRAUD_WEB_PORT", "0", "TCP port"),
        ("FRAUD_MAX_AMOUNT", "1e999999", "at most 1e15"),
        ("FRAUD_MAX_AMOUNT", "lots", "decimal"),
        ("FRAUD_MAX_AMOUNT_DECIMALS", "13", "decimal places"),
        ("FRAUD_MAX_RULES", "0", "positive"),
        ("FRAUD_MAX_RULE_BYTES", "-1", "positive"),
        ("FRAUD_MAX_INTERNAL_ERRORS_PER_MINUTE", "many", "not a number"),
        ("FRAUD_BROKER", "127.0.0.1:9092", "kafka://host:port"),
        ("FRAUD_STORE", "rocksdict://", "rocksdb://"),
        ("FRAUD_ALLOWED_LATENESS", "-1", "seconds"),
        ("FRAUD_TOPIC_ALERTS", "bad topic", "topic name"),
        ("FRAUD_DYNAMODB_ENDPOINT", "localhost:8000", "http"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({name: value})
    assert name in str(info.value)
    assert message in str(info.value)


def test_worker_refuses_to_start_on_a_bad_setting() -> None:
    env = {**os.environ, "FRAUD_PARTITIONS": "-3"}
    result = subprocess.run(
        [sys.executable, "-m", "faust", "-A", "app", "worker"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "FRAUD_PARTITIONS" in result.stderr


def test_partitions_are_unset_by_default_so_the_topic_decides() -> None:
    assert load_settings({}).partitions is None
    assert load_settings({"FRAUD_MAX_AMOUNT": "5000.50"}).max_amount == Decimal("5000.50")


def test_each_settings_field_is_set_by_one_declared_variable_that_says_what_it_means() -> None:
    attrs = [variable.attr for variable in DECLARED]
    assert sorted(attrs) == sorted(f.name for f in dataclasses.fields(Settings))
    assert len({variable.name for variable in DECLARED}) == len(DECLARED)
    assert all(variable.description.endswith(".") for variable in DECLARED)


def test_the_settings_page_is_generated_from_the_declaration_with_each_default() -> None:
    table = worker_settings_table()
    assert first_column(table) == [PREFIX + variable.name for variable in DECLARED]
    rows = table.splitlines()
    assert "| `FRAUD_ALLOWED_LATENESS` | `60` | Seconds of event-time disorder" in table
    assert "| `FRAUD_MAX_EVENT_AGE` | `2592000` |" in table
    assert "| `FRAUD_SINK_ENABLED` | `true` |" in table
    assert "| `FRAUD_MAX_AMOUNT` | `1000000000000` |" in table
    assert "| `FRAUD_PARTITIONS` | unset |" in table
    secret = [row for row in rows if "`FRAUD_API_TOKEN`" in row]
    assert len(secret) == 1 and "Never printed" in secret[0]


def test_the_settings_page_holds_the_generated_tables_in_place_of_its_markers() -> None:
    source = page(SETTINGS_PAGE)
    built = expand(source, SETTINGS_PAGE)
    assert WORKER_MARKER not in built and NOTIFIER_MARKER not in built
    assert worker_settings_table() in built and notifier_variables_table() in built
    # Only the generated tables list variables: nothing written by hand to drift.
    assert "| `FRAUD_" not in source
    with pytest.raises(PluginError, match="exactly once"):
        expand(source.replace(WORKER_MARKER, ""), SETTINGS_PAGE)
    assert expand(source, "reference/cli.md") == source


def test_the_notifier_table_lists_each_variable_the_lambda_reads() -> None:
    table = notifier_variables_table()
    assert first_column(table) == [
        name
        for variable in NOTIFIER_VARIABLES
        for name in (variable.name, variable.fallback)
        if name is not None
    ]
    assert "| `IDEMPOTENCY_TABLE` | required |" in table


def test_every_setting_the_readme_and_the_docs_name_is_one_that_is_read() -> None:
    read = {PREFIX + variable.name for variable in DECLARED}
    read |= {variable.name for variable in NOTIFIER_VARIABLES}
    texts = [REPO / "README.md", *DOCS.rglob("*.md")]
    named = {
        (path.name, name)
        for path in texts
        # A family such as FRAUD_KAFKA_* is no name of its own.
        for name in re.findall(
            r"\bFRAUD_[A-Z0-9_]*[A-Z0-9](?![A-Z0-9_]*\*)", path.read_text(encoding="utf-8")
        )
    }
    assert {(where, name) for where, name in named if name not in read} == set()


def test_the_api_token_is_a_setting_and_never_shown() -> None:
    settings = load_settings({"FRAUD_API_TOKEN": "s3cret-token"})
    assert settings.api_token == "s3cret-token" and "s3cret" not in repr(settings)
    with pytest.raises(SettingsError) as info:
        load_settings({"FRAUD_API_TOKEN": "has space"})
    assert "FRAUD_API_TOKEN" in str(info.value) and "has space" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("FRAUD_DYNAMODB_TABLE", "a", "DynamoDB table name"),
        ("FRAUD_AWS_REGION", "localhost", "AWS region"),
        ("FRAUD_FETCH_MAX_WAIT_MS", "1500.5", "not a number"),
        ("FRAUD_FETCH_MAX_WAIT_MS", "20000", "milliseconds from 0 to 10000"),
        ("FRAUD_FETCH_MIN_BYTES", "0", "bytes from 1 to 1048576"),
        ("FRAUD_FETCH_MIN_BYTES", "2000000", "bytes from 1 to 1048576"),
    ],
)
def test_each_validator_speaks_of_its_own_setting(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings({name: value})


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("true", True),
        ("1", True),
        ("YES", True),
        ("false", False),
        ("0", False),
        ("no", False),
        (" False ", False),
        ("", True),
    ],
)
def test_sink_enabled_setting(raw: str, value: bool) -> None:
    assert load_settings({"FRAUD_SINK_ENABLED": raw}).sink_enabled is value
    assert load_settings({}).sink_enabled is True


def test_bad_sink_enabled_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="FRAUD_SINK_ENABLED='maybe'"):
        load_settings({"FRAUD_SINK_ENABLED": "maybe"})


def test_a_future_skew_beyond_the_allowed_lateness_stops_the_worker_naming_both() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"FRAUD_MAX_FUTURE_SKEW": "120", "FRAUD_ALLOWED_LATENESS": "60"})
    assert "FRAUD_MAX_FUTURE_SKEW=120" in str(info.value)
    assert "FRAUD_ALLOWED_LATENESS=60" in str(info.value)


@pytest.mark.parametrize("value", ["999", "2501", "many"])
def test_a_key_bound_outside_its_range_stops_the_worker(value: str) -> None:
    with pytest.raises(SettingsError, match="FRAUD_MAX_KEY_EVENTS"):
        load_settings({"FRAUD_MAX_KEY_EVENTS": value})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("86400", "FRAUD_STATE_RETENTION=86400: must be at least 604860"),
        ("40000000", "FRAUD_STATE_RETENTION=4e+07: more than the longest window"),
        ("soon", "FRAUD_STATE_RETENTION='soon'"),
    ],
)
def test_a_state_retention_shorter_than_a_week_and_the_lateness_stops_the_worker(
    value: str, message: str
) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"FRAUD_STATE_RETENTION": value})
    assert str(info.value).startswith(message), info.value

"""app.worker.settings: settings come from FRAUD_* variables; a bad value is refused,
naming the variable."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from app.worker.settings import VARIABLES, SettingsError, load_settings

REPO = Path(__file__).resolve().parents[3]


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


def test_the_readme_table_lists_exactly_the_declared_settings() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Settings", 1)[1].split("\n### ", 1)[0]
    listed = set(re.findall(r"`FRAUD_([A-Z0-9_]+)`", section))
    assert listed == {name for name, _, _ in VARIABLES}


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

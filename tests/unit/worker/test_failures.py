"""app.worker.failures: internal errors and agent crashes: counted, logged sparingly,
judged by /healthz."""

from __future__ import annotations

import logging

import pytest

from app.worker.failures import Failures
from tests.pan_variants import PAN, readable_digits


def test_internal_errors_log_once_per_class_per_minute_and_never_the_card_number(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = [0.0]
    failures = Failures(max_internal_errors_per_minute=100, clock=lambda: clock[0])
    with caplog.at_level(logging.ERROR, logger="app.worker.failures"):
        for _ in range(50):
            failures.internal_error("detect", KeyError("4111111111111111"), "p[0]@1")
        failures.internal_error("detect", ValueError("x"), "p[0]@2")
        clock[0] = 61.0
        failures.internal_error("detect", KeyError("y"), "p[0]@3")
    assert [r.getMessage().split(" at ")[0] for r in caplog.records] == [
        "detect: unforeseen KeyError",
        "detect: unforeseen ValueError",
        "detect: unforeseen KeyError",
    ]
    assert "4111111111111111" not in caplog.text and "************1111" in caplog.text
    assert failures.internal_errors[("detect", "KeyError")] == 51


def test_too_many_internal_errors_within_a_minute_and_recovery() -> None:
    clock = [0.0]
    failures = Failures(max_internal_errors_per_minute=2, clock=lambda: clock[0])
    failures.internal_error("detect", ValueError(), "w")
    failures.internal_error("detect", ValueError(), "w")
    assert not failures.internal_errors_too_many()
    clock[0] = 30.0
    failures.internal_error("detect", ValueError(), "w")
    assert failures.internal_errors_too_many()
    clock[0] = 61.0
    assert not failures.internal_errors_too_many()


def test_a_crash_is_remembered_for_a_minute() -> None:
    clock = [0.0]
    failures = Failures(clock=lambda: clock[0])
    assert not failures.crashed_recently()
    failures.agent_crashed("detect", RuntimeError())
    clock[0] = 59.0
    assert failures.crashed_recently() and failures.last_crash == "detect: RuntimeError"
    clock[0] = 60.5
    assert not failures.crashed_recently() and failures.crashes["detect"] == 1


def test_a_separated_or_escaped_card_number_in_a_traceback_is_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = [0.0]
    failures = Failures(max_internal_errors_per_minute=100, clock=lambda: clock[0])
    with caplog.at_level(logging.ERROR, logger="app.worker.failures"):
        failures.internal_error("detect", KeyError("4111 1111 1111 1111"), "p[0]@1")
        clock[0] = 61.0  # past the once-a-minute limit of a class
        # A KeyError's message is the repr of its key: the zero-width space as \u200b.
        failures.internal_error("detect", KeyError("4\u200b111111111111111"), "p[0]@2")
        failures.internal_error("detect", ValueError("4\u200b111111111111111"), "p[0]@3")
    assert len(caplog.records) == 3
    assert caplog.text.count("**** **** **** 1111") == 1
    assert PAN not in readable_digits(caplog.text)


def test_a_refused_dlq_send_fails_health_for_a_minute() -> None:
    clock = [0.0]
    failures = Failures(clock=lambda: clock[0])
    assert not failures.dlq_sends_failing()
    failures.dlq_send_failed("dead letter (unparseable) for p[0]@1", TimeoutError())
    clock[0] = 59.0
    assert failures.dlq_sends_failing()
    failures.dlq_send_failed("dead letter (unparseable) for p[0]@2", TimeoutError())
    clock[0] = 118.0
    assert failures.dlq_sends_failing(), "a minute from the latest"
    clock[0] = 119.5
    assert not failures.dlq_sends_failing() and failures.dlq_send_failures == 2

"""Faust agents: thin loops that decode, call the pure logic, update state and emit."""

from agents import (
    payments,  # noqa: F401
    sink,  # noqa: F401
)

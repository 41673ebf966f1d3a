"""Faust agents: thin loops that decode, call the pure logic, update state and emit."""

from agents import archive, grouped, payments, rules, sink  # noqa: F401

"""One module per rule kind: how a rule of that kind applies a payment to its state on a
key and what alert it raises. ``app.detection.engine`` finds a rule's kind by its type
(``KIND_OF``) and does everything the kinds share: lateness, redeliveries, conflicts,
versions, expiry and the per-key bound."""

from __future__ import annotations

from app.detection.kinds import absence, aggregate, first_seen, geo_velocity, history, sequence
from app.detection.kinds.base import Context, Kind
from app.detection.rules import (
    AbsenceRule,
    AggregateRule,
    FirstSeenRule,
    GeoVelocityRule,
    HistoryRule,
    Rule,
    SequenceRule,
)

KIND_OF: dict[type[Rule], Kind] = {
    AggregateRule: aggregate.KIND,
    SequenceRule: sequence.KIND,
    FirstSeenRule: first_seen.KIND,
    HistoryRule: history.KIND,
    GeoVelocityRule: geo_velocity.KIND,
}
KIND_OF[AbsenceRule] = absence.KIND

__all__ = ["KIND_OF", "Context", "Kind"]

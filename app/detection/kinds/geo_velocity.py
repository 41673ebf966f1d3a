"""Geo-velocity rules: two events of one key from places too far apart for the time
between them (impossible travel).

The events a rule compares are its key's *qualifying* events (those that pass its filter and
have a place: ``app.detection.geo``) in event-time order, ties broken by ``txn_id``. A *pair*
is two such events next to each other in that order; it is *impossible* when they are at
most ``window`` apart in event time, have a distance (not told apart only by a centroid:
``app.detection.geo.apart``), at least ``min_distance_km``, and are further apart than
``max_speed_kmh`` covers in the time between them (``distance > speed * hours``, so two
places at once is impossible whatever the speed). An event is in at most one alert of the
rule (after-match skip, as every kind here): an impossible pair alerts when neither of its
events is used by an alert already.

Invariant after every event: no pair of the key's events received so far is impossible with
both of its events unused. A new event changes only the pairs it is in, with the event
before it and the one after it (the pair those two formed is gone): the earlier of the two
pairs is checked first, then the later, which restores the invariant whatever the arrival
order. So, for the key's events in their final event-time order:

* sound: every alert is two qualifying events of the key, next to each other among the
  events received when it was raised, at most ``window`` apart, impossible as above;
* complete: every impossible pair of the final order has an event in an alert. With
  ``min_distance_km`` 0 no impossible pair of *any* two events within the window escapes
  either when every event carries its own position: between them, the distances of the
  pairs add up to at least theirs in the same time, so some pair between them is
  impossible too (the triangle inequality);
* disjoint and idempotent, as the other kinds (the engine recognises redeliveries).

Which pair alerts can depend on arrival order within the lateness (an event arriving late
between two that alerted finds them used); that the properties hold does not.

State: the key's qualifying events within the window and the lateness (``GeoVelocityState``),
bounded like every kind by ``FRAUD_MAX_KEY_EVENTS``. A decision is a binary search and at
most two distances: O(log n).
"""

from __future__ import annotations

from app.detection.aggregates import Entry
from app.detection.geo import apart, place_of_text, place_text
from app.detection.kinds.base import Context, make_alert, own_state
from app.detection.models import Alert, Payment
from app.detection.rules import GeoVelocityRule, Rule
from app.detection.state import GeoVelocityState, RuleState


class GeoVelocityKind:
    def state(self, rule: Rule, held: RuleState | None) -> RuleState:
        return own_state(GeoVelocityState, rule, held)

    def apply(
        self, rule: Rule, rule_state: RuleState, payment: Payment, fingerprint: str, ctx: Context
    ) -> Alert | None:
        assert isinstance(rule, GeoVelocityRule) and isinstance(rule_state, GeoVelocityState)
        entry: Entry = (
            payment.ts_ms,
            payment.txn_id,
            str(payment.amount),
            payment.country,
            place_text(payment),
            fingerprint,
        )
        index = rule_state.insert(entry)
        pool = rule_state.pool
        for before, after in ((index - 1, index), (index, index + 1)):
            if before < 0 or after >= len(pool):
                continue
            found = impossible(rule, rule_state, pool[before], pool[after])
            if found is None:
                continue
            first, second = pool[before], pool[after]
            rule_state.mark_used({e[1]: (e[0], e[5]) for e in (first, second)})
            distance, speed, hours = found
            return make_alert(
                rule,
                ctx,
                [first, second],
                payment,
                speed,
                kind=rule.kind,
                explanation=(
                    ("distance_km", distance),
                    ("speed_kmh", speed),
                    ("hours", hours),
                    ("from", _where(first)),
                    ("to", _where(second)),
                    ("max_speed_kmh", str(rule.max_speed_kmh)),
                ),
            )
        return None


KIND = GeoVelocityKind()


def impossible(
    rule: GeoVelocityRule, state: GeoVelocityState, first: Entry, second: Entry
) -> tuple[str, str, str] | None:
    """(distance km, speed km/h, hours between them), each as text, if the pair of
    neighbouring events ``first`` < ``second`` is impossible and neither is used; None if not."""
    if first[1] in state.used or second[1] in state.used:
        return None
    elapsed_ms = second[0] - first[0]
    if elapsed_ms > rule.window_ms:
        return None
    distance = apart(first[3], first[4], second[3], second[4])
    hours = elapsed_ms / 3_600_000
    if (
        distance is None
        or distance < float(rule.min_distance_km)
        or distance <= float(rule.max_speed_kmh) * hours
    ):
        return None
    speed = "inf" if hours == 0 else f"{distance / hours:.0f}"
    return f"{distance:.0f}", speed, f"{hours:.3f}"


def _where(entry: Entry) -> str:
    """An event's place as the alert explains it: its country and its position."""
    lat, lon = place_of_text(entry[3], entry[4])
    position = f"{lat:.4f},{lon:.4f}" + ("" if entry[4] else " centroid")
    return f"{entry[3]} ({position})" if entry[3] else position


__all__ = ["KIND", "impossible"]

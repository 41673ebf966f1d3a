"""What each rule kind costs the pure engine: generated payments decided as the batch path
decides them, without Kafka. One process, one core.

    python -m bench.engine_kinds [--payments 200000] [--repeat 3]

For the shipped default rules alone, then with each rule of ``examples/rules/kinds.yaml``
added (made active), every payment is decided for every group-by of the rules in force: a key
without a stored state whose payment no rule qualifies costs nothing (``pools_nowhere``, as
``agents/batch.py`` skips it); any other is decoded from its stored JSON, evaluated and, if
changed, encoded again (what the store and its changelog write). Reported per configuration:
microseconds of CPU per payment (the process's CPU time, which a loaded machine disturbs
less than wall time; the fastest of ``--repeat`` runs: the machine's other work only ever
adds), the share of payments that write a state, and the bytes written.
Then one hot key per kind: a key whose events all stay within the window (the worst case of
each kind's search). Then the state a 60-day history rule and a 90-day first-seen rule keep:
bytes per key for cards of 1 to 10 000 payments in the window, and the total over ``--cards``
cards (1 million by default; ``--cards 0`` skips it) of 1 to 6 payments each over 59 days,
built through the pure engine card by card. Raw numbers go to
``bench/results/engine_kinds.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from app.detection.engine import KeyState, evaluate, fit, pools_nowhere
from app.detection.models import Payment
from app.detection.rules import Rule, parse_rule
from app.generator import PaymentGenerator
from app.rules_admin.topic import load_rule_file

REPO = Path(__file__).parents[1]
DEFAULT_RULES = REPO / "app" / "rules_admin" / "default_rules.yaml"
KIND_RULES = REPO / "examples" / "rules" / "kinds.yaml"
LONG_RULES = REPO / "examples" / "rules" / "long-history.yaml"
RESULTS = Path(__file__).parent / "results" / "engine_kinds.json"
LATENESS_MS = 60_000
START_MS = 1_795_000_000_000
_encode = msgspec.json.Encoder().encode


def decide(payments: list[Payment], rules: list[Rule]) -> dict[str, Any]:
    """Every payment through every group-by's rules, states stored as JSON bytes."""
    groups: dict[tuple[str, ...], list[Rule]] = {}
    for rule in rules:
        groups.setdefault(rule.group_by, []).append(rule)
    stores: dict[tuple[str, ...], dict[str, bytes]] = {group: {} for group in groups}
    writes = written = alerts = 0
    started = time.process_time()
    for p in payments:
        for group, group_rules in groups.items():
            key = group_rules[0].group_key(p)
            store = stores[group]
            raw = store.get(key)
            if raw is None and pools_nowhere(p, group_rules):
                continue
            state = KeyState.from_bytes(raw)
            verdict = evaluate(state, p, key, group_rules, LATENESS_MS, 0, 0)
            alerts += len(verdict.alerts)
            if verdict.changed or verdict.duplicate:
                if state.rules:
                    encoded, _ = fit(state, _encode)
                    store[key] = encoded
                    writes += 1
                    written += len(encoded)
                elif raw is not None:
                    del store[key]
    seconds = time.process_time() - started
    return {
        "us_per_payment": round(seconds / len(payments) * 1e6, 2),
        "state_writes_per_payment": round(writes / len(payments), 4),
        "bytes_written_per_payment": round(written / len(payments), 1),
        "keys_held": sum(len(store) for store in stores.values()),
        "alerts": alerts,
    }


def hot_key(rule: Rule, events: int = 3_000, bound: int = 2_000) -> dict[str, Any]:
    """One key, ``events`` payments 100 ms apart that all qualify and stay within the window,
    decided in order on a state kept decoded (as a busy key's is between batches)."""
    state = KeyState()
    started = time.process_time()
    for i in range(events):
        p = Payment(
            f"h{i}",
            "tok_hot",
            "acct_hot",
            rule_amount(rule),
            "USD",
            f"m{i % 7}",
            "5411",
            "US",
            f"dev{i % 3}",
            "198.51.100.7",
            "",
            START_MS + i * 100,
        )
        evaluate(state, p, "tok_hot", [rule], LATENESS_MS, 0, 0, bound)
    seconds = time.process_time() - started
    return {"events": events, "us_per_event": round(seconds / events * 1e6, 1)}


DAY_MS = 24 * 3600 * 1000


def long_rules() -> list[Rule]:
    """A 60-day history rule and a 90-day first-seen rule, active."""
    return [replace(rule, status="active") for rule in load_rule_file(LONG_RULES)]


# Payments per card over 59 days in the million-card run: mean 3.
PER_CARD = (1, 1, 2, 2, 3, 4, 5, 6)


def card_state_bytes(card: int, payments: int, devices: int, rules: list[Rule]) -> int:
    """The stored bytes of one card's state after ``payments`` over 59 days, from
    ``devices`` devices, decided in order through the long rules."""
    state, key = KeyState(), f"tok_{card}"
    step = 59 * DAY_MS // payments
    for i in range(payments):
        p = Payment(
            f"{card}-{i}",
            key,
            "acct",
            Decimal(10 + (card * 7 + i * 13) % 90),
            "USD",
            "m1",
            "5411",
            "US",
            f"dev{i % devices}",
            "198.51.100.7",
            "",
            START_MS + i * step,
        )
        evaluate(state, p, key, rules, LATENESS_MS, 0, 0)
    return len(fit(state, _encode)[0])


def state_sizes(cards: int) -> dict[str, Any]:
    """Bytes per key for busier and busier cards, and in all over ``cards`` cards."""
    rules = long_rules()
    per_key = {str(n): card_state_bytes(0, n, 3, rules) for n in (1, 10, 100, 1_000, 10_000)}
    total, started = 0, time.process_time()
    for card in range(cards):
        total += card_state_bytes(card, PER_CARD[card % len(PER_CARD)], 1 + card % 3, rules)
    seconds = time.process_time() - started
    payments = sum(PER_CARD[c % len(PER_CARD)] for c in range(cards))
    return {
        "bytes_per_key_by_payments_in_window": per_key,
        "cards": cards,
        "payments": payments,
        "total_bytes": total,
        "bytes_per_card": round(total / cards, 1) if cards else None,
        "us_per_payment": round(seconds / payments * 1e6, 1) if payments else None,
    }


def rule_amount(rule: Rule) -> Decimal:
    """An amount every step or filter of the example rules takes (or none, for the small
    step of the sequence: a card tested 3 000 times, never cashed out)."""
    return Decimal("1.00") if rule.kind == "sequence" else Decimal("700")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cards", type=int, default=1_000_000)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--only-state", action="store_true", help="only the state sizes")
    args = parser.parse_args()
    if args.only_state:
        sizes = state_sizes(args.cards)
        print(json.dumps(sizes, indent=2))
        return
    generator = PaymentGenerator(seed=3, cards=20_000, fraud_ratio=0.005, pattern_ratio=0.002)
    payments = [p for p, _ in generator.stream(args.payments, START_MS, step_ms=5)]
    defaults = load_rule_file(DEFAULT_RULES)
    kinds = [replace(rule, status="active") for rule in load_rule_file(KIND_RULES)]
    configurations = {"default rules": defaults}
    for rule in kinds:
        configurations[f"default + {rule.rule_id} ({rule.kind})"] = [*defaults, rule]
    configurations["default + every kind"] = [*defaults, *kinds]
    results: dict[str, Any] = {"payments": len(payments), "configurations": {}, "hot_key": {}}
    print(f"{len(payments)} payments, one process")
    print(f"{'rules':<52} {'us/payment':>10} {'writes':>7} {'bytes/p':>8} {'alerts':>7}")
    for name, rules in configurations.items():
        decide(payments[:20_000], rules)  # warm up
        runs = [decide(payments, rules) for _ in range(args.repeat)]
        found = min(runs, key=lambda run: float(run["us_per_payment"]))
        results["configurations"][name] = found
        print(
            f"{name:<52} {found['us_per_payment']:>10} {found['state_writes_per_payment']:>7}"
            f" {found['bytes_written_per_payment']:>8} {found['alerts']:>7}"
        )
    hot = parse_rule(
        {
            "rule_id": "hot-other-country",
            "version": 1,
            "kind": "sequence",
            "window": 3600,
            "steps": [
                {"filter": []},
                {"filter": [{"field": "country", "op": "!=", "ref": "steps[0].country"}]},
            ],
        }
    )
    for rule in [*kinds, hot]:
        runs = [hot_key(rule) for _ in range(args.repeat)]
        results["hot_key"][rule.rule_id] = min(runs, key=lambda run: float(run["us_per_event"]))
        print(f"hot key, {rule.rule_id}: {results['hot_key'][rule.rule_id]}")
    if args.cards:
        results["state"] = state_sizes(args.cards)
        print(f"state of a 60-day history and a 90-day first-seen rule: {results['state']}")
    args.results.parent.mkdir(exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

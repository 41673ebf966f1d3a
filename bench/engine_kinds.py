"""What each rule kind costs the pure engine: generated payments decided as the batch path
decides them, without Kafka. One process, one core.

    python -m bench.engine_kinds [--payments 200000] [--repeat 3]

For the shipped default rules alone, then with each rule of ``examples/rules/kinds.yaml``
added (made active), every payment is decided for every group-by of the rules in force: a key
without a stored state whose payment no rule qualifies costs nothing (``pools_nowhere``, as
``agents/batch.py`` skips it); any other is decoded from its stored JSON, evaluated and, if
changed, encoded again (what the store and its changelog write). Reported per configuration:
microseconds per payment (the fastest of ``--repeat`` runs: the machine's other work only
ever adds), the share of payments that write a state, and the bytes written.
Then one hot key per kind: a key whose events all stay within the window (the worst case of
each kind's search). Raw numbers go to ``bench/results/engine_kinds.json``.
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
RESULTS = Path(__file__).parent / "results" / "engine_kinds.json"
LATENESS_MS = 60_000
START_MS = 1_795_000_000_000
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def decide(payments: list[Payment], rules: list[Rule]) -> dict[str, Any]:
    """Every payment through every group-by's rules, states stored as JSON bytes."""
    groups: dict[tuple[str, ...], list[Rule]] = {}
    for rule in rules:
        groups.setdefault(rule.group_by, []).append(rule)
    stores: dict[tuple[str, ...], dict[str, bytes]] = {group: {} for group in groups}
    writes = written = alerts = 0
    started = time.perf_counter()
    for p in payments:
        for group, group_rules in groups.items():
            key = group_rules[0].group_key(p)
            store = stores[group]
            raw = store.get(key)
            if raw is None and pools_nowhere(p, group_rules):
                continue
            state = KeyState.from_json(None if raw is None else _decode(raw))
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
    seconds = time.perf_counter() - started
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
    started = time.perf_counter()
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
    seconds = time.perf_counter() - started
    return {"events": events, "us_per_event": round(seconds / events * 1e6, 1)}


def rule_amount(rule: Rule) -> Decimal:
    """An amount every step or filter of the example rules takes (or none, for the small
    step of the sequence: a card tested 3 000 times, never cashed out)."""
    return Decimal("1.00") if rule.kind == "sequence" else Decimal("700")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
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
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

"""The newcomer journeys' commands, spelt exactly as the docs spell them.

tests/unit/test_newcomer_docs.py checks that each is on its page;
tests/integration/test_journeys.py runs them, in a shell holding the demo's exports.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
QUICKSTART = DOCS / "quickstart.md"
FIRST_RULE = DOCS / "tutorials" / "first-rule.md"
PRODUCE = DOCS / "how-to" / "produce-payments.md"
PAGES = (QUICKSTART, FIRST_RULE, PRODUCE)

SOURCE_ENV = "source .cache/demo.env"
RULES_LIST = ".venv/bin/faust -A app rules list"
PRODUCE_PAYMENT = ".venv/bin/python examples/produce_payment.py"
STATS = 'curl -s "$DEMO_WEB_URL/stats/"'
TODAY_TO_TOMORROW = '--since "$(date -u +%F)" --until "$(date -u -d tomorrow +%F)"'
BACKTEST = (
    f".venv/bin/faust -A app rules backtest examples/rules/first-rule.yaml {TODAY_TO_TOMORROW}"
)
BREAK_RULE = "sed 's/window: 60/window: 0/' examples/rules/first-rule.yaml > /tmp/broken-rule.yaml"
BACKTEST_BROKEN = f".venv/bin/faust -A app rules backtest /tmp/broken-rule.yaml {TODAY_TO_TOMORROW}"
RULES_PUT = ".venv/bin/faust -A app rules put examples/rules/first-rule.yaml"
CURL_PUT = (
    'curl -X PUT -H "Authorization: Bearer $FRAUD_API_TOKEN"'
    " -H 'Content-Type: application/json' --data @examples/rules/first-rule.json"
    ' "$DEMO_WEB_URL/rules/gb-pair/"'
)
RULES_SHOW = ".venv/bin/faust -A app rules show gb-pair"
RULES_ACTIVATE = ".venv/bin/faust -A app rules activate gb-pair"
BAD_PAYMENT = 'sed \'s/"GB"/"UK"/\' examples/payment.json > /tmp/bad-payment.json'
PRODUCE_BAD_PAYMENT = ".venv/bin/python examples/produce_payment.py /tmp/bad-payment.json"
DLQ_COUNTS = (
    'curl -s "$DEMO_WEB_URL/stats/" | .venv/bin/python -c'
    " 'import json, sys; print(json.load(sys.stdin)[\"dlq\"])'"
)

# Each command and the pages that show it, as a line of a code block.
ON_PAGES: dict[str, tuple[Path, ...]] = {
    SOURCE_ENV: (QUICKSTART,),
    RULES_LIST: (QUICKSTART, FIRST_RULE),
    PRODUCE_PAYMENT: (QUICKSTART, PRODUCE, FIRST_RULE),
    STATS: (QUICKSTART,),
    BACKTEST: (FIRST_RULE,),
    BREAK_RULE: (FIRST_RULE,),
    BACKTEST_BROKEN: (FIRST_RULE,),
    RULES_PUT: (FIRST_RULE,),
    CURL_PUT: (FIRST_RULE,),
    RULES_SHOW: (FIRST_RULE,),
    RULES_ACTIVATE: (FIRST_RULE,),
    BAD_PAYMENT: (PRODUCE,),
    PRODUCE_BAD_PAYMENT: (PRODUCE,),
    DLQ_COUNTS: (PRODUCE,),
}

"""How rules get in: the rules topic (follow, publish, rule files) and the HTTP API.
The CLI commands are in ``app.cli``; the shipped rules in ``default_rules.yaml``."""

"""The notifier: DynamoDB Streams records of ``fraud_alerts`` -> Slack and SNS.

Entry point on AWS: ``lambdas.notifier.handlers.notify.handler``. Laid out like the
Powertools Lambda cookbook: ``handlers/`` (the thin entry point), ``logic/`` (what
to notify and how the message reads), ``adapters/`` (Slack, SNS, Secrets Manager,
the idempotency table), ``models/`` (the alert and the environment). Locally,
``python -m infra.local.stream_poller`` stands in for the event source mapping
and ``python -m infra.local.slack_receiver`` for Slack.
"""

"""The notifier: DynamoDB Streams records of ``fraud_alerts`` -> Slack and SNS.

Entry point on AWS: ``lambdas.notifier.handler.handler``. Locally,
``python -m infra.local.stream_poller`` stands in for the event source mapping
and ``python -m infra.local.slack_receiver`` for Slack.
"""

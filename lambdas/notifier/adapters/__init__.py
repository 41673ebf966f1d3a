"""The notifier's outside world: Slack, SNS, Secrets Manager, the idempotency table, boto3."""

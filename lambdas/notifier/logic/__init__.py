"""What the notifier does with a record: delivery to Slack and SNS, and the Slack message."""

output "function_name" {
  description = "The notifier Lambda."
  value       = aws_lambda_function.notifier.function_name
}

output "sns_topic_arn" {
  description = "The topic receiving each alert as JSON."
  value       = aws_sns_topic.alerts.arn
}

output "slack_webhook_secret_arn" {
  description = "The webhook secret to fill with put-secret-value; null with a bot token or Slack off."
  value       = one(aws_secretsmanager_secret.slack_webhook[*].arn)
}

output "slack_bot_token_secret_arn" {
  description = "The bot-token secret to fill with put-secret-value; null with a webhook or Slack off."
  value       = one(aws_secretsmanager_secret.slack_bot_token[*].arn)
}

output "put_slack_secret_command" {
  description = "Stores the webhook URL or bot token from ./slack-secret.txt in the stack's Slack secret; null when Slack is off."
  value       = length(local.slack_secrets) == 0 ? null : "aws secretsmanager put-secret-value --region ${local.region} --secret-id ${one(local.slack_secrets[*].arn)} --secret-string file://slack-secret.txt"
}

output "failure_queue_name" {
  description = "SQS queue of stream records the function could not deliver."
  value       = aws_sqs_queue.failures.name
}

output "idempotency_table_name" {
  description = "The idempotency table (key id, TTL on expiration); the Slack actions keep their replay records there too."
  value       = aws_dynamodb_table.idempotency.name
}

output "idempotency_table_arn" {
  description = "ARN of the idempotency table."
  value       = aws_dynamodb_table.idempotency.arn
}

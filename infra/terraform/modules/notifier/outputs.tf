output "function_name" {
  description = "The notifier Lambda."
  value       = aws_lambda_function.notifier.function_name
}

output "sns_topic_arn" {
  description = "The topic receiving each alert as JSON."
  value       = aws_sns_topic.alerts.arn
}

output "slack_webhook_secret_arn" {
  description = "The secret to fill with put-secret-value; null when Slack is off."
  value       = one(aws_secretsmanager_secret.slack_webhook[*].arn)
}

output "failure_queue_name" {
  description = "SQS queue of stream records the function could not deliver."
  value       = aws_sqs_queue.failures.name
}

output "region" {
  description = "The stack's region (var.region, as the provider reports it): every command below names it; `export AWS_REGION=$(terraform output -raw region)` for your own."
  value       = local.region
}

output "bootstrap_brokers" {
  description = "MSK's IAM-authenticated TLS listener, host:port,host:port (the workers get it as FRAUD_BROKER)."
  value       = module.kafka.bootstrap_brokers
}

output "msk_cluster_arn" {
  description = "The MSK cluster."
  value       = module.kafka.cluster_arn
}

output "alerts_table" {
  description = "The alerts table (FRAUD_DYNAMODB_TABLE)."
  value       = module.alerts.table_name
}

output "cases_table" {
  description = "The cases table (FRAUD_CASES_TABLE): cases outlive the alerts' 24 h."
  value       = module.cases.table_name
}

output "alerts_stream_arn" {
  description = "The alerts table's stream, the notifier's event source."
  value       = module.alerts.stream_arn
}

output "archive_bucket" {
  description = "The archive bucket."
  value       = module.archive.bucket
}

output "archive_url" {
  description = "FRAUD_ARCHIVE_URL of the workers (and of backtests run elsewhere)."
  value       = module.archive.url
}

output "ecs_cluster" {
  description = "The workers' ECS cluster."
  value       = module.workers.cluster_name
}

output "service_name" {
  description = "The workers' ECS service (aws ecs update-service --desired-count to scale by hand)."
  value       = module.workers.service_name
}

output "web_url" {
  description = "The workers' web endpoints (dashboard, /cards, /alerts, /rules, /healthz): the internal load balancer, reachable from web_allowed_cidrs only. Also a good inspect_base_url."
  value       = module.web.url
}

output "workers_log_group" {
  description = "The workers' log group."
  value       = module.workers.log_group_name
}

output "create_topics_command" {
  description = "Creates the pipeline's topics (run once before the workers can start; idempotent)."
  value       = module.workers.create_topics_command
}

output "rules_command" {
  description = "Runs `faust -A app rules list` in the VPC; override the command for show/pause/activate/delete."
  value       = module.workers.rules_command
}

output "put_default_rules_command" {
  description = "Publishes the shipped default rules to the rules topic."
  value       = module.workers.put_default_rules_command
}

output "rules_s3_prefix" {
  description = "Where your rule files go (aws s3 cp my-rule.yaml <this>my-rule.yaml) for put_rules_from_s3_command."
  value       = module.workers.rules_s3_prefix
}

output "put_rules_from_s3_command" {
  description = "Publishes the rule file $RULES_FILE (a name under rules_s3_prefix) with `faust -A app rules put`: set RULES_FILE in the shell, then eval this."
  value       = module.workers.put_rules_from_s3_command
}

output "slack_webhook_secret_arn" {
  description = "The webhook secret (slack_channel null): fill it with put_slack_secret_command."
  value       = module.notifier.slack_webhook_secret_arn
}

output "slack_bot_token_secret_arn" {
  description = "The bot-token secret (slack_channel set): fill it with put_slack_secret_command."
  value       = module.notifier.slack_bot_token_secret_arn
}

output "put_slack_secret_command" {
  description = "Stores ./slack-secret.txt (the webhook URL, or the xoxb- bot token) in the stack's Slack secret; the notifier reads it within 5 minutes."
  value       = module.notifier.put_slack_secret_command
}

output "sns_topic_arn" {
  description = "SNS topic receiving every alert as JSON."
  value       = module.notifier.sns_topic_arn
}

output "alarm_topic_arn" {
  description = "SNS topic of the CloudWatch alarms."
  value       = module.monitoring.alarm_topic_arn
}

output "dashboard_url" {
  description = "The CloudWatch dashboard."
  value       = module.monitoring.dashboard_url
}

output "kms_key_arn" {
  description = "The stack's KMS key (an API-token secret must be encrypted with it)."
  value       = module.kms.key_arn
}

output "slack_interactivity_url" {
  description = "The Slack app's Interactivity Request URL (the buttons' function URL); null with slack_actions_enabled false."
  value       = one(module.slack_actions[*].function_url)
}

output "put_slack_signing_secret_command" {
  description = "Stores ./slack-signing-secret.txt (the Slack app's signing secret) in the stack's secret; null with slack_actions_enabled false."
  value       = one(module.slack_actions[*].put_signing_secret_command)
}

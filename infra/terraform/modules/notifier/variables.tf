variable "name" {
  description = "Prefix of every resource name."
  type        = string
}

variable "lambda_zip" {
  description = "The notifier package built by `make lambda-zip`."
  type        = string
}

variable "alerts_table_arn" {
  description = "ARN of the alerts table."
  type        = string
}

variable "alerts_stream_arn" {
  description = "ARN of the alerts table's stream, the function's event source."
  type        = string
}

variable "inspect_base_url" {
  description = "Base URL of the workers' web endpoints, for the card link in Slack messages; empty: no link."
  type        = string
}

variable "slack_enabled" {
  description = "Post to Slack (a secret is created for the webhook URL or the bot token); false: SNS only."
  type        = bool
}

variable "slack_channel" {
  description = "Channel a bot token posts to (chat.postMessage); null: an incoming webhook instead."
  type        = string
  default     = null
}

variable "batch_size" {
  description = "Stream records per invocation."
  type        = number
}

variable "maximum_retry_attempts" {
  description = "Retries of a failing batch (bisected) before its records go to the failure queue."
  type        = number
}

variable "kms_key_arn" {
  description = "The stack's KMS key."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the notifier's log group, in days."
  type        = number
}

variable "deletion_protection" {
  description = "Refuse to delete the idempotency table."
  type        = bool
}

variable "cases_table_name" {
  description = "The cases table: with a bot token, a later alert of an open case updates the case's message (its ts kept on the case row)."
  type        = string
}

variable "cases_table_arn" {
  description = "ARN of the cases table."
  type        = string
}

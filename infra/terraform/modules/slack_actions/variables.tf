variable "name" {
  description = "Prefix of every resource name."
  type        = string
}

variable "lambda_zip" {
  description = "The package built by `make lambda-zip` (the notifier's: it holds lambdas/slack_actions too)."
  type        = string
}

variable "api_token_secret_arn" {
  description = "The workers' FRAUD_API_TOKEN secret: the close API needs it."
  type        = string
}

variable "cases_api_url" {
  description = "Base URL of the workers' web endpoints (the internal load balancer), where POST /cases/{id}/close is."
  type        = string
}

variable "vpc_id" {
  description = "The VPC of the workers and their load balancer."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets the closer runs in."
  type        = list(string)
}

variable "alb_security_group_id" {
  description = "The load balancer's security group (the closer is let in on its listener port)."
  type        = string
}

variable "kms_key_arn" {
  description = "The stack's KMS key."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the functions' log groups, in days."
  type        = number
}

variable "replay_table_name" {
  description = "Table of the requests seen (key id, TTL on expiration): the notifier's idempotency table."
  type        = string
}

variable "replay_table_arn" {
  description = "ARN of that table."
  type        = string
}

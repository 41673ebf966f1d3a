# AWS side of fraud-detection: the alerts table (TTL + stream), the notifier Lambda fed by
# that stream, its idempotency table, the SNS topic and the Slack secret's wiring.
# The Kafka side (MSK) and the workers' hosting are left to the platform that runs them;
# the workers only need FRAUD_BROKER and IAM access to the alerts table (policy below).
#
# Not validated here: this workplace reaches no Terraform registry. Run
# `terraform init && terraform validate` before the first apply.

terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }
}

provider "aws" {
  region = var.region
}

variable "region" {
  type    = string
  default = "eu-west-1"
}

variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "fraud"
}

variable "lambda_zip" {
  description = "The notifier package built by `make lambda-zip`."
  type        = string
  default     = "../../build/notifier.zip"
}

variable "slack_webhook_secret_arn" {
  description = "Secrets Manager secret holding the Slack incoming-webhook URL (never a plain variable)."
  type        = string
}

variable "inspect_base_url" {
  description = "Base URL of the workers' web endpoints, for the card link in Slack messages."
  type        = string
  default     = ""
}

# --- the alerts table: key alert_id, TTL on expires_at, NEW_IMAGE stream -----------------

resource "aws_dynamodb_table" "alerts" {
  name         = "${var.name}_alerts"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "alert_id"

  attribute {
    name = "alert_id"
    type = "S"
  }

  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }

  stream_enabled   = true
  stream_view_type = "NEW_IMAGE"

  point_in_time_recovery {
    enabled = true
  }
}

# Powertools idempotency records: one per (sink, alert_id), expiring after 48 h.
resource "aws_dynamodb_table" "notifier_idempotency" {
  name         = "${var.name}_notifier_idempotency"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "id"

  attribute {
    name = "id"
    type = "S"
  }

  ttl {
    attribute_name = "expiration"
    enabled        = true
  }
}

resource "aws_sns_topic" "alerts" {
  name = "${var.name}-alerts"
}

# --- the notifier Lambda --------------------------------------------------------------

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "notifier" {
  name               = "${var.name}-notifier"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

data "aws_iam_policy_document" "notifier" {
  statement {
    actions = [
      "dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator",
      "dynamodb:ListStreams",
    ]
    resources = [aws_dynamodb_table.alerts.stream_arn]
  }
  statement {
    actions = [
      "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
    ]
    resources = [aws_dynamodb_table.notifier_idempotency.arn]
  }
  statement {
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alerts.arn]
  }
  statement {
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.slack_webhook_secret_arn]
  }
  statement {
    actions   = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["arn:aws:logs:*:*:*"]
  }
}

resource "aws_iam_role_policy" "notifier" {
  role   = aws_iam_role.notifier.id
  policy = data.aws_iam_policy_document.notifier.json
}

resource "aws_lambda_function" "notifier" {
  function_name    = "${var.name}-notifier"
  role             = aws_iam_role.notifier.arn
  runtime          = "python3.11"
  handler          = "lambdas.notifier.handlers.notify.handler"
  filename         = var.lambda_zip
  source_code_hash = filebase64sha256(var.lambda_zip)
  timeout          = 30
  memory_size      = 256

  environment {
    variables = {
      SLACK_WEBHOOK_SECRET_ARN = var.slack_webhook_secret_arn
      SNS_TOPIC_ARN            = aws_sns_topic.alerts.arn
      IDEMPOTENCY_TABLE        = aws_dynamodb_table.notifier_idempotency.name
      FRAUD_INSPECT_BASE_URL   = var.inspect_base_url
      POWERTOOLS_SERVICE_NAME  = "fraud-notifier"
    }
  }
}

resource "aws_lambda_event_source_mapping" "alerts_stream" {
  event_source_arn               = aws_dynamodb_table.alerts.stream_arn
  function_name                  = aws_lambda_function.notifier.arn
  starting_position              = "LATEST"
  batch_size                     = 100
  maximum_batching_window_in_seconds = 0
  maximum_retry_attempts         = 10
  bisect_batch_on_function_error = true
  function_response_types        = ["ReportBatchItemFailures"]

  # Only new alerts reach the function: TTL REMOVEs and MODIFYs never invoke it.
  filter_criteria {
    filter {
      pattern = jsonencode({ eventName = ["INSERT"] })
    }
  }
}

# --- what the Faust workers need --------------------------------------------------------

data "aws_iam_policy_document" "workers" {
  statement {
    actions   = ["dynamodb:PutItem", "dynamodb:DescribeTable"]
    resources = [aws_dynamodb_table.alerts.arn]
  }
}

resource "aws_iam_policy" "workers" {
  name   = "${var.name}-workers"
  policy = data.aws_iam_policy_document.workers.json
}

output "alerts_table" {
  value = aws_dynamodb_table.alerts.name
}

output "alerts_stream_arn" {
  value = aws_dynamodb_table.alerts.stream_arn
}

output "sns_topic_arn" {
  value = aws_sns_topic.alerts.arn
}

output "workers_policy_arn" {
  value = aws_iam_policy.workers.arn
}

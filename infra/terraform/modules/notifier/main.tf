# The notifier: the alerts table's stream -> Lambda -> Slack and SNS, at most one post per
# alert_id (Powertools idempotency records), partial batch failures reported, records that
# exhaust their retries sent to an SQS queue instead of being lost.
#
# Slack, one way or the other (the function refuses both at once: every alert would be
# posted twice): an incoming webhook (default), or, with var.slack_channel, a bot token
# posting with chat.postMessage to that channel. The URL or the token lives in Secrets
# Manager; Terraform creates the secret but never its value, so neither is in any plan,
# state or tfvars file. After the first apply (output put_slack_secret_command):
#   aws secretsmanager put-secret-value --secret-id <slack_secret_arn> \
#       --secret-string file://slack-secret.txt   # the webhook URL, or the xoxb- token

data "aws_region" "current" {}

locals {
  region = data.aws_region.current.name
}

# Powertools idempotency records: one per (sink, alert_id), expiring after 48 h.
resource "aws_dynamodb_table" "idempotency" {
  name                        = "${var.name}_notifier_idempotency"
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "id"
  deletion_protection_enabled = var.deletion_protection

  attribute {
    name = "id"
    type = "S"
  }

  ttl {
    attribute_name = "expiration"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = var.kms_key_arn
  }
}

# Each alert as JSON, for whoever subscribes (case management, e-mail, a queue).
resource "aws_sns_topic" "alerts" {
  name              = "${var.name}-alerts"
  kms_master_key_id = var.kms_key_arn
}

resource "aws_secretsmanager_secret" "slack_webhook" {
  #checkov:skip=CKV2_AWS_57:A Slack incoming-webhook URL is issued by Slack; no rotation Lambda can mint a new one. Rotate by hand with put-secret-value.
  count                   = var.slack_enabled && var.slack_channel == null ? 1 : 0
  name                    = "${var.name}/slack-webhook-url"
  description             = "Slack incoming-webhook URL of the fraud-alert channel (value set with put-secret-value, never by Terraform)."
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret" "slack_bot_token" {
  #checkov:skip=CKV2_AWS_57:A Slack bot token is issued by Slack when the app is installed; no rotation Lambda can mint a new one. Rotate by hand with put-secret-value.
  count                   = var.slack_enabled && var.slack_channel != null ? 1 : 0
  name                    = "${var.name}/slack-bot-token"
  description             = "Slack bot token (xoxb-, scope chat:write) posting fraud alerts to the configured channel (value set with put-secret-value, never by Terraform)."
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = 7
}

locals {
  # The one Slack secret of the stack, if any.
  slack_secrets = concat(aws_secretsmanager_secret.slack_webhook, aws_secretsmanager_secret.slack_bot_token)
}

# Stream records the function still failed after every retry and bisection: the alert is
# in DynamoDB but nobody was told. An alarm (modules/monitoring) fires on any message here.
resource "aws_sqs_queue" "failures" {
  name                      = "${var.name}-notifier-failures"
  message_retention_seconds = 1209600 # 14 days, the maximum
  kms_master_key_id         = var.kms_key_arn
}

resource "aws_cloudwatch_log_group" "notifier" {
  name              = "/${var.name}/notifier"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

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
    sid       = "ReadTheAlertsStream"
    actions   = ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"]
    resources = [var.alerts_stream_arn]
  }
  # A stream's ARN ends in a label DynamoDB picks when the stream is enabled.
  statement {
    sid       = "FindTheAlertsStream"
    actions   = ["dynamodb:ListStreams"]
    resources = ["${var.alerts_table_arn}/stream/*"]
  }
  statement {
    sid       = "IdempotencyRecords"
    actions   = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"]
    resources = [aws_dynamodb_table.idempotency.arn]
  }
  # The case's Slack message: its ts kept on the case row, read to update it (conditional
  # writes only; lambdas/notifier/adapters/cases.py).
  statement {
    sid       = "TheCaseMessage"
    actions   = ["dynamodb:GetItem", "dynamodb:UpdateItem"]
    resources = [var.cases_table_arn]
  }
  statement {
    sid       = "PublishAlerts"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alerts.arn]
  }
  statement {
    sid       = "ReportFailedRecords"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.failures.arn]
  }
  dynamic "statement" {
    for_each = local.slack_secrets
    content {
      sid       = "ReadTheSlackSecret"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [statement.value.arn]
    }
  }
  # The group exists (above), so no logs:CreateLogGroup; ":*" is every log stream of this
  # one group (Lambda names the streams at run time).
  statement {
    sid       = "WriteTheNotifiersLogGroup"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.notifier.arn}:*"]
  }
  # Everything above is encrypted with the stack's key; usable only through those services.
  statement {
    sid       = "UseTheKeyThroughTheseServices"
    actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
    resources = [var.kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values = [
        "dynamodb.${local.region}.amazonaws.com",
        "sns.${local.region}.amazonaws.com",
        "sqs.${local.region}.amazonaws.com",
        "secretsmanager.${local.region}.amazonaws.com",
        "lambda.${local.region}.amazonaws.com",
      ]
    }
  }
}

resource "aws_iam_role_policy" "notifier" {
  name   = "notify"
  role   = aws_iam_role.notifier.id
  policy = data.aws_iam_policy_document.notifier.json
}

resource "aws_lambda_function" "notifier" {
  #checkov:skip=CKV_AWS_50:No X-Ray in this stack (it would need xray:PutTraceSegments on "*"); Powertools logs carry each alert_id for correlation.
  #checkov:skip=CKV_AWS_115:The stream mapping bounds concurrency already (one batch per shard at parallelization factor 1); reserving concurrency would only take it from the account's pool and can fail on small accounts.
  #checkov:skip=CKV_AWS_116:Stream invocations are synchronous, so a function DLQ (async only) would never receive anything; the mapping's on-failure destination below is the DLQ.
  #checkov:skip=CKV_AWS_117:The function reaches only Slack and public AWS APIs; inside the VPC, which has no internet route by design, it would need a NAT just for Slack.
  #checkov:skip=CKV_AWS_272:The zip is built from this repository by `make lambda-zip` and uploaded by the deploying principal; there is no signing profile in this stack.
  function_name    = "${var.name}-notifier"
  role             = aws_iam_role.notifier.arn
  runtime          = "python3.11"
  architectures    = ["x86_64"] # what `make lambda-zip` builds for
  handler          = "lambdas.notifier.handlers.notify.handler"
  filename         = var.lambda_zip
  source_code_hash = filebase64sha256(var.lambda_zip)
  timeout          = 30
  memory_size      = 256
  kms_key_arn      = var.kms_key_arn

  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.notifier.name
  }

  environment {
    variables = merge(
      {
        SNS_TOPIC_ARN           = aws_sns_topic.alerts.arn
        IDEMPOTENCY_TABLE       = aws_dynamodb_table.idempotency.name
        CASES_TABLE             = var.cases_table_name
        FRAUD_INSPECT_BASE_URL  = var.inspect_base_url
        POWERTOOLS_SERVICE_NAME = "fraud-notifier"
      },
      { for secret in aws_secretsmanager_secret.slack_webhook : "SLACK_WEBHOOK_SECRET_ARN" => secret.arn },
      { for secret in aws_secretsmanager_secret.slack_bot_token : "SLACK_BOT_TOKEN_SECRET_ARN" => secret.arn },
      { for secret in aws_secretsmanager_secret.slack_bot_token : "SLACK_CHANNEL" => var.slack_channel },
    )
  }

  depends_on = [aws_iam_role_policy.notifier]
}

resource "aws_lambda_event_source_mapping" "alerts_stream" {
  event_source_arn                   = var.alerts_stream_arn
  function_name                      = aws_lambda_function.notifier.arn
  starting_position                  = "LATEST"
  batch_size                         = var.batch_size
  maximum_batching_window_in_seconds = 0
  maximum_retry_attempts             = var.maximum_retry_attempts
  bisect_batch_on_function_error     = true
  function_response_types            = ["ReportBatchItemFailures"]

  destination_config {
    on_failure {
      destination_arn = aws_sqs_queue.failures.arn
    }
  }

  # Only new alerts reach the function: TTL REMOVEs and MODIFYs never invoke it.
  filter_criteria {
    filter {
      pattern = jsonencode({ eventName = ["INSERT"] })
    }
  }
}

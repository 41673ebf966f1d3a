# Slack's buttons on the alert message (Fraud / Not fraud): Slack posts each press to the
# app's interactivity URL, this function URL. Two functions, because no single one can
# reach both ends: the workers' load balancer is internal to a VPC that has no route to
# the internet, and Slack (the message update through response_url) is on the internet.
#
#   Slack ──► function URL ──► actions (outside the VPC: verifies, refuses replays, reads
#                              │          the API token, answers Slack through response_url)
#                              └─ lambda:InvokeFunction ──► closer (in the VPC) ──► internal
#                                 ALB ──► POST /cases/{id}/close (the case row and its label)
#
# The URL has no AWS auth (auth NONE): Slack cannot sign with SigV4. It signs with the
# app's signing secret instead, which the function checks (slack_sdk's verifier, 5 minutes'
# tolerance) before anything else; a replayed request is refused by a conditional put in
# the notifier's idempotency table (same shape: key id, TTL on expiration; keys prefixed
# slack-action#, expiring after 10 minutes, when the verifier refuses them as stale anyway). The signing secret lives in Secrets Manager; Terraform creates
# the secret but never its value (output put_signing_secret_command).

data "aws_region" "current" {}

locals {
  region = data.aws_region.current.name
  # The workers' listener: 443 with a certificate, else 80 (modules/web).
  listener_port = startswith(var.cases_api_url, "https://") ? 443 : 80
}

resource "aws_secretsmanager_secret" "signing_secret" {
  #checkov:skip=CKV2_AWS_57:A Slack app's signing secret is issued by Slack (Basic Information, Regenerate); no rotation Lambda can mint one. Rotate by hand with put-secret-value.
  name                    = "${var.name}/slack-signing-secret"
  description             = "Signing secret of the Slack app whose buttons close cases (value set with put-secret-value, never by Terraform)."
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = 7
}

resource "aws_cloudwatch_log_group" "actions" {
  name              = "/${var.name}/slack-actions"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

resource "aws_cloudwatch_log_group" "closer" {
  name              = "/${var.name}/slack-closer"
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

# --- the function behind the URL ------------------------------------------------------

resource "aws_iam_role" "actions" {
  name               = "${var.name}-slack-actions"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

data "aws_iam_policy_document" "actions" {
  statement {
    sid       = "RecordEachRequestOnce"
    actions   = ["dynamodb:PutItem"]
    resources = [var.replay_table_arn]
  }
  statement {
    sid       = "ReadTheSigningSecretAndTheApiToken"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.signing_secret.arn, var.api_token_secret_arn]
  }
  statement {
    sid       = "HandTheCloseToTheCloser"
    actions   = ["lambda:InvokeFunction"]
    resources = [aws_lambda_function.closer.arn]
  }
  statement {
    sid       = "WriteTheActionsLogGroup"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.actions.arn}:*"]
  }
  statement {
    sid       = "UseTheKeyThroughTheseServices"
    actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
    resources = [var.kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values = [
        "dynamodb.${local.region}.amazonaws.com",
        "secretsmanager.${local.region}.amazonaws.com",
        "lambda.${local.region}.amazonaws.com",
      ]
    }
  }
}

resource "aws_iam_role_policy" "actions" {
  name   = "slack-actions"
  role   = aws_iam_role.actions.id
  policy = data.aws_iam_policy_document.actions.json
}

resource "aws_lambda_function" "actions" {
  #checkov:skip=CKV_AWS_50:No X-Ray in this stack (it would need xray:PutTraceSegments on "*"); the logs carry each case id and refusal reason.
  #checkov:skip=CKV_AWS_115:Bounded by reserved concurrency would let a flood of forged requests starve genuine presses just as well; Slack's own rate is a few presses a minute.
  #checkov:skip=CKV_AWS_116:Function URL invocations are synchronous, so a function DLQ (async only) would never receive anything; a failed press is answered to Slack and logged.
  #checkov:skip=CKV_AWS_117:It answers Slack through response_url on the internet; inside the VPC (no internet route by design) it could not. The close itself runs in the closer, inside the VPC.
  #checkov:skip=CKV_AWS_272:The zip is built from this repository by `make lambda-zip` and uploaded by the deploying principal; there is no signing profile in this stack.
  function_name    = "${var.name}-slack-actions"
  role             = aws_iam_role.actions.arn
  runtime          = "python3.11"
  architectures    = ["x86_64"]
  handler          = "lambdas.slack_actions.handler.handler"
  filename         = var.lambda_zip
  source_code_hash = filebase64sha256(var.lambda_zip)
  timeout          = 10
  memory_size      = 256
  kms_key_arn      = var.kms_key_arn

  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.actions.name
  }

  environment {
    variables = {
      REPLAY_TABLE             = var.replay_table_name
      SLACK_SIGNING_SECRET_ARN = aws_secretsmanager_secret.signing_secret.arn
      API_TOKEN_SECRET_ARN     = var.api_token_secret_arn
      CLOSER_FUNCTION_NAME     = aws_lambda_function.closer.function_name
      POWERTOOLS_SERVICE_NAME  = "fraud-slack-actions"
    }
  }

  depends_on = [aws_iam_role_policy.actions]
}

resource "aws_lambda_function_url" "actions" {
  #checkov:skip=CKV_AWS_258:Slack cannot sign with SigV4 (AWS_IAM); every request is verified with the Slack app's signing secret, and replays refused, by the function before it does anything.
  function_name      = aws_lambda_function.actions.function_name
  authorization_type = "NONE"
}

# --- the closer, inside the VPC -------------------------------------------------------

resource "aws_security_group" "closer" {
  name        = "${var.name}-slack-closer"
  description = "The Slack closer: out to the workers' internal load balancer only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_egress_rule" "closer_to_alb" {
  security_group_id            = aws_security_group.closer.id
  description                  = "The workers' close API, through their load balancer"
  ip_protocol                  = "tcp"
  from_port                    = local.listener_port
  to_port                      = local.listener_port
  referenced_security_group_id = var.alb_security_group_id
}

resource "aws_vpc_security_group_ingress_rule" "alb_from_closer" {
  security_group_id            = var.alb_security_group_id
  description                  = "The Slack closer's close requests"
  ip_protocol                  = "tcp"
  from_port                    = local.listener_port
  to_port                      = local.listener_port
  referenced_security_group_id = aws_security_group.closer.id
}

resource "aws_iam_role" "closer" {
  name               = "${var.name}-slack-closer"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

# The network interfaces Lambda creates for a function in a VPC (AWS's own policy).
resource "aws_iam_role_policy_attachment" "closer_vpc" {
  role       = aws_iam_role.closer.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
}

data "aws_iam_policy_document" "closer" {
  statement {
    sid       = "WriteTheClosersLogGroup"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.closer.arn}:*"]
  }
}

resource "aws_iam_role_policy" "closer" {
  name   = "slack-closer"
  role   = aws_iam_role.closer.id
  policy = data.aws_iam_policy_document.closer.json
}

resource "aws_lambda_function" "closer" {
  #checkov:skip=CKV_AWS_50:No X-Ray in this stack (it would need xray:PutTraceSegments on "*"); the logs carry each case id and the workers' answer.
  #checkov:skip=CKV_AWS_115:Invoked only by the actions function, one press at a time; reserving concurrency would only take it from the account's pool.
  #checkov:skip=CKV_AWS_116:Invoked synchronously by the actions function, so a function DLQ (async only) would never receive anything.
  #checkov:skip=CKV_AWS_272:The zip is built from this repository by `make lambda-zip` and uploaded by the deploying principal; there is no signing profile in this stack.
  function_name    = "${var.name}-slack-closer"
  role             = aws_iam_role.closer.arn
  runtime          = "python3.11"
  architectures    = ["x86_64"]
  handler          = "lambdas.slack_actions.closer.handler"
  filename         = var.lambda_zip
  source_code_hash = filebase64sha256(var.lambda_zip)
  timeout          = 5
  memory_size      = 256
  kms_key_arn      = var.kms_key_arn

  vpc_config {
    subnet_ids         = var.subnet_ids
    security_group_ids = [aws_security_group.closer.id]
  }

  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.closer.name
  }

  environment {
    variables = {
      CASES_API_URL           = var.cases_api_url
      POWERTOOLS_SERVICE_NAME = "fraud-slack-closer"
    }
  }

  depends_on = [aws_iam_role_policy.closer, aws_iam_role_policy_attachment.closer_vpc]
}

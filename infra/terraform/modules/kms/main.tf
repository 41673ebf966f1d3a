# The stack's customer-managed key: DynamoDB tables and their stream, the archive bucket,
# MSK's storage, SNS topics, the SQS failure queue, Secrets Manager, Lambda's environment and
# every CloudWatch log group.
#
# One key rather than one per service: every use is still gated by the caller's own IAM
# policy, which names this key and (kms:ViaService) the one service it may use it through,
# so sharing the key widens nobody's access; it keeps one key policy to audit.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  region     = data.aws_region.current.name
  partition  = data.aws_partition.current.partition
}

data "aws_iam_policy_document" "key" {
  #checkov:skip=CKV_AWS_109:A key policy, not an IAM policy: kms:* for the account root is AWS's default statement that hands the key's administration to IAM policies; without it the key could not be managed.
  #checkov:skip=CKV_AWS_111:Same statement: only the account root, whose access is then delegated through IAM policies that name this key.
  #checkov:skip=CKV_AWS_356:In a key policy the resource "*" means this key and is the only value KMS accepts.
  # AWS's default key policy statement: it lets IAM policies of this account grant use of
  # the key (without it, only this policy could). In a key policy "*" as the resource means
  # "this key" and is the only value AWS accepts; kms:* is what keeps the key manageable.
  statement {
    sid       = "AccountAdministersTheKeyThroughIam"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  # CloudWatch Logs encrypts log groups itself, as a service principal: only this stack's
  # log groups (all named /<name>/...).
  statement {
    sid = "CloudWatchLogsEncryptsThisStacksLogGroups"
    actions = [
      "kms:Encrypt",
      "kms:Decrypt",
      "kms:ReEncryptFrom",
      "kms:ReEncryptTo",
      "kms:GenerateDataKey",
      "kms:GenerateDataKeyWithoutPlaintext",
      "kms:DescribeKey",
    ]
    resources = ["*"] # this key (see above)
    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:/${var.name}/*"]
    }
  }

  # CloudWatch alarms publish to the (encrypted) alarm topic as the cloudwatch service;
  # the AWS-managed SNS key cannot grant that, which is why the topics use this key.
  statement {
    sid       = "CloudWatchAlarmsPublishToEncryptedTopics"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = ["*"] # this key (see above)
    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_kms_key" "this" {
  description             = "${var.name}: data at rest of the fraud-detection stack"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.key.json
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.this.key_id
}

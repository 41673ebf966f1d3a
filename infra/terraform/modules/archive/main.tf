# The Parquet archive (FRAUD_ARCHIVE_URL=s3://<bucket>/<prefix>): every payment, alert and
# dead letter, read back by backtests.
#
# Encryption: SSE-KMS with the stack's key rather than S3-managed keys. Reading an object
# then needs kms:Decrypt on that key as well as s3:GetObject, so a bucket-policy or IAM
# mistake on the S3 side alone exposes no payment, and every decryption is in CloudTrail.
# The bucket key keeps KMS requests (and their cost) to a few per object batch; the archive
# writes few, large files (a partition's records roll every 64 MiB or 5 minutes).

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}

resource "aws_s3_bucket" "archive" {
  #checkov:skip=CKV_AWS_18:Access logging would need a second bucket that itself needs logging; object reads and writes are auditable through CloudTrail S3 data events, which the account turns on where it needs them.
  #checkov:skip=CKV_AWS_144:Cross-region replication doubles the cost of a history that Kafka and the workers can rebuild forward but not backward; an organisation that needs a second region adds a replication rule to this bucket.
  #checkov:skip=CKV2_AWS_62:Nothing consumes object-created events: backtests list the archive when they run.
  bucket        = "${var.name}-archive-${data.aws_caller_identity.current.account_id}-${data.aws_region.current.name}"
  force_destroy = false
}

resource "aws_s3_bucket_ownership_controls" "archive" {
  bucket = aws_s3_bucket.archive.id
  rule {
    object_ownership = "BucketOwnerEnforced" # no ACLs: the policies below are the only access
  }
}

resource "aws_s3_bucket_public_access_block" "archive" {
  bucket                  = aws_s3_bucket.archive.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "archive" {
  bucket = aws_s3_bucket.archive.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "archive" {
  bucket = aws_s3_bucket.archive.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = true
  }
}

# Archive files are written once and read by backtests, mostly of recent weeks: Standard-IA
# after 30 days, Glacier Instant Retrieval (still millisecond reads, so a backtest of old
# data works unchanged, at a per-GB retrieval fee) after 90. A replay rewrites a file under
# the same name, so old versions are kept only for var.noncurrent_days.
resource "aws_s3_bucket_lifecycle_configuration" "archive" {
  bucket = aws_s3_bucket.archive.id

  rule {
    id     = "archive-tiering"
    status = "Enabled"
    filter {
      prefix = "${var.prefix}/"
    }
    transition {
      days          = var.ia_days
      storage_class = "STANDARD_IA"
    }
    transition {
      days          = var.glacier_ir_days
      storage_class = "GLACIER_IR"
    }
    dynamic "expiration" {
      for_each = var.expiration_days == null ? [] : [var.expiration_days]
      content {
        days = expiration.value
      }
    }
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_days
    }
  }

  rule {
    id     = "housekeeping"
    status = "Enabled"
    filter {}
    # An upload cut short by a crash (the worker rewrites the file after its restart).
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
    expiration {
      expired_object_delete_marker = true
    }
  }

  depends_on = [aws_s3_bucket_versioning.archive]
}

data "aws_iam_policy_document" "archive" {
  # Deny statements must apply to every principal, hence "*" as the principal; they take
  # access away, so s3:* here is the broadest denial, not a grant.
  statement {
    sid     = "DenyPlainHttp"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.archive.arn,
      "${aws_s3_bucket.archive.arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  statement {
    sid     = "DenyTlsOlderThan12"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.archive.arn,
      "${aws_s3_bucket.archive.arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "NumericLessThan"
      variable = "s3:TlsVersion"
      values   = ["1.2"]
    }
  }
}

resource "aws_s3_bucket_policy" "archive" {
  bucket = aws_s3_bucket.archive.id
  policy = data.aws_iam_policy_document.archive.json

  depends_on = [aws_s3_bucket_public_access_block.archive]
}

# The alerts table the workers' sink writes (conditional puts on alert_id): TTL on
# expires_at (the workers set it 24 h ahead) and a NEW_IMAGE stream that feeds the notifier.

resource "aws_dynamodb_table" "alerts" {
  name                        = var.table_name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "alert_id"
  deletion_protection_enabled = var.deletion_protection

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

  server_side_encryption {
    enabled     = true
    kms_key_arn = var.kms_key_arn
  }
}

# The cases table (app/cases): no TTL, cases outlive the alerts. One table, three kinds of
# item told apart by the key's prefix: case#<id> (the case), open#<slot> (the open case of a
# rule on a key), alert#<id> (the case an alert went to). The sink writes them in the same
# transaction as the alert's row in the alerts table; the API and the CLI list and close.
# The by_status index holds the case items alone (the others have no status), newest first.

resource "aws_dynamodb_table" "cases" {
  name                        = var.table_name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "pk"
  deletion_protection_enabled = var.deletion_protection

  attribute {
    name = "pk"
    type = "S"
  }

  attribute {
    name = "status"
    type = "S"
  }

  attribute {
    name = "opened_at"
    type = "S"
  }

  global_secondary_index {
    name            = "by_status"
    hash_key        = "status"
    range_key       = "opened_at"
    projection_type = "ALL"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = var.kms_key_arn
  }
}

output "table_name" {
  description = "Name of the alerts table."
  value       = aws_dynamodb_table.alerts.name
}

output "table_arn" {
  description = "ARN of the alerts table."
  value       = aws_dynamodb_table.alerts.arn
}

output "stream_arn" {
  description = "ARN of the table's NEW_IMAGE stream."
  value       = aws_dynamodb_table.alerts.stream_arn
}

output "table_name" {
  description = "Name of the cases table."
  value       = aws_dynamodb_table.cases.name
}

output "table_arn" {
  description = "ARN of the cases table (its index is table_arn/index/by_status)."
  value       = aws_dynamodb_table.cases.arn
}

output "bucket" {
  description = "Name of the archive bucket."
  value       = aws_s3_bucket.archive.bucket
}

output "bucket_arn" {
  description = "ARN of the archive bucket."
  value       = aws_s3_bucket.archive.arn
}

output "url" {
  description = "The workers' FRAUD_ARCHIVE_URL."
  value       = "s3://${aws_s3_bucket.archive.bucket}/${var.prefix}"
}

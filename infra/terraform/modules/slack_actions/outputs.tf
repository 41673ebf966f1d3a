output "function_url" {
  description = "The Slack app's interactivity request URL."
  value       = aws_lambda_function_url.actions.function_url
}

output "signing_secret_arn" {
  description = "The signing-secret secret to fill with put-secret-value."
  value       = aws_secretsmanager_secret.signing_secret.arn
}

output "put_signing_secret_command" {
  description = "Stores ./slack-signing-secret.txt (Basic Information > Signing Secret) in the stack's secret; read within 5 minutes."
  value       = "aws secretsmanager put-secret-value --region ${local.region} --secret-id ${aws_secretsmanager_secret.signing_secret.arn} --secret-string file://slack-signing-secret.txt"
}

output "function_name" {
  description = "The function behind the URL."
  value       = aws_lambda_function.actions.function_name
}

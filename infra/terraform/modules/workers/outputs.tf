output "cluster_name" {
  description = "The ECS cluster."
  value       = aws_ecs_cluster.this.name
}

output "service_name" {
  description = "The workers' ECS service."
  value       = aws_ecs_service.workers.name
}

output "log_group_name" {
  description = "The workers' log group (and the admin task's)."
  value       = aws_cloudwatch_log_group.workers.name
}

output "task_role_arn" {
  description = "The workers' task role."
  value       = aws_iam_role.task.arn
}

output "create_topics_command" {
  description = "Runs the one-shot task that creates the pipeline's topics (idempotent)."
  value       = local.run_admin_task["create-topics"]
}

output "rules_command" {
  description = "Runs `faust -A app rules list` on AWS; override the command for put/show/pause/activate/delete."
  value       = local.run_admin_task.rules
}

output "put_default_rules_command" {
  description = "Runs the rules task publishing the shipped default rules."
  value       = "${local.run_admin_task.rules} --overrides '${jsonencode({ containerOverrides = [{ name = "rules", command = ["rules", "put", local.default_rules_path] }] })}'"
}

output "rules_s3_prefix" {
  description = "s3://<bucket>/<rules prefix>/: where the put-rules task reads rule files."
  value       = local.rules_s3_prefix
}

output "put_rules_from_s3_command" {
  description = "Runs the put-rules task on the file named by the shell's $RULES_FILE (eval it: the override splices the variable in)."
  value       = "${local.run_admin_task["put-rules"]} --overrides '${replace(jsonencode({ containerOverrides = [{ name = "put-rules", environment = [{ name = "RULES_FILE", value = local.rules_file_placeholder }] }] }), local.rules_file_placeholder, local.rules_file_from_the_shell)}'"
}

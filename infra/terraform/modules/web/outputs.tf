output "url" {
  description = "Base URL of the workers' web endpoints (private DNS name of the internal load balancer)."
  value       = "${local.https ? "https" : "http"}://${aws_lb.web.dns_name}"
}

# The service may register with the target group only once a listener forwards to it.
output "target_group_arn" {
  description = "The workers' target group (the ECS service registers each task's address)."
  value       = aws_lb_target_group.workers.arn
  depends_on  = [aws_lb_listener.https, aws_lb_listener.http]
}

output "security_group_id" {
  description = "The load balancer's security group."
  value       = aws_security_group.alb.id
}

output "load_balancer_arn_suffix" {
  description = "The load balancer's CloudWatch dimension (LoadBalancer)."
  value       = aws_lb.web.arn_suffix
}

output "target_group_arn_suffix" {
  description = "The target group's CloudWatch dimension (TargetGroup)."
  value       = aws_lb_target_group.workers.arn_suffix
}

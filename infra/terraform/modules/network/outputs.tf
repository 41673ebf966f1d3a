output "vpc_id" {
  description = "The VPC."
  value       = aws_vpc.this.id
}

output "private_subnet_ids" {
  description = "One private subnet per availability zone."
  value       = aws_subnet.private[*].id
}

output "workers_security_group_id" {
  description = "The workers' security group: the only one MSK and the endpoints admit."
  value       = aws_security_group.workers.id
}

output "msk_security_group_id" {
  description = "The brokers' security group."
  value       = aws_security_group.msk.id
}

# A task started during the apply (the create-topics task, modules/workers) must find its way
# out: ECR and Logs endpoints, the S3 gateway (image layers), the route table, and every
# security-group rule of the workers' group. Referring to this waits for all of them.
output "workers_network_ready" {
  description = "True once every endpoint, route and security-group rule the workers' tasks use exists (refer to it to wait for them)."
  value       = true
  depends_on = [
    aws_vpc_endpoint.gateway,
    aws_vpc_endpoint.interface,
    aws_route_table_association.private,
    aws_vpc_security_group_ingress_rule.msk_from_workers,
    aws_vpc_security_group_ingress_rule.endpoints_from_workers,
    aws_vpc_security_group_egress_rule.workers_to_msk,
    aws_vpc_security_group_egress_rule.workers_to_endpoints,
    aws_vpc_security_group_egress_rule.workers_to_gateways,
    aws_vpc_security_group_ingress_rule.workers_web_from_workers,
    aws_vpc_security_group_egress_rule.workers_web_to_workers,
  ]
}

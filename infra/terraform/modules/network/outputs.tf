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

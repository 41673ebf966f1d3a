output "cluster_arn" {
  description = "ARN of the MSK cluster."
  value       = aws_msk_cluster.this.arn
}

output "cluster_name" {
  description = "Name of the MSK cluster (the `Cluster Name` dimension of its metrics)."
  value       = aws_msk_cluster.this.cluster_name
}

output "broker_count" {
  description = "Number of brokers (their metric dimension `Broker ID` runs from 1 to this)."
  value       = aws_msk_cluster.this.number_of_broker_nodes
}

output "bootstrap_brokers" {
  description = "host:port,host:port of the IAM-authenticated TLS listener."
  value       = aws_msk_cluster.this.bootstrap_brokers_sasl_iam
}

output "topic_arn_prefix" {
  description = "ARN prefix of this cluster's topics: append /<topic name>."
  value       = replace(aws_msk_cluster.this.arn, ":cluster/", ":topic/")
}

output "group_arn_prefix" {
  description = "ARN prefix of this cluster's consumer groups: append /<group id>."
  value       = replace(aws_msk_cluster.this.arn, ":cluster/", ":group/")
}

variable "name" {
  description = "Cluster name (and prefix of its log group and configuration)."
  type        = string
}

variable "kafka_version" {
  description = "Apache Kafka version of the brokers."
  type        = string
}

variable "instance_type" {
  description = "Broker instance type."
  type        = string
}

variable "brokers_per_az" {
  description = "Brokers in each of the subnets' availability zones."
  type        = number
}

variable "volume_size_gib" {
  description = "EBS storage per broker, GiB."
  type        = number
}

variable "retention_hours" {
  description = "How long the brokers keep records of topics without a retention of their own (log.retention.hours)."
  type        = number
}

variable "replication_factor" {
  description = "Default replication factor of new topics; min.insync.replicas is one less."
  type        = number
}

variable "enhanced_monitoring" {
  description = "MSK enhanced monitoring level (PER_TOPIC_PER_PARTITION for per-topic and lag metrics)."
  type        = string
}

variable "subnet_ids" {
  description = "One private subnet per availability zone for the brokers."
  type        = list(string)
}

variable "security_group_id" {
  description = "The brokers' security group (admits the workers only)."
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key for data at rest and the broker log group."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the broker log group, in days."
  type        = number
}

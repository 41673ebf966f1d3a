variable "name" {
  description = "Prefix of every resource name."
  type        = string
}

variable "image" {
  description = "The project's worker image in ECR (<account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>)."
  type        = string
}

variable "cpu" {
  description = "Fargate CPU units per worker task."
  type        = number
}

variable "memory" {
  description = "Fargate memory per worker task, MiB."
  type        = number
}

variable "cpu_architecture" {
  description = "X86_64 or ARM64: the architecture the image was built for."
  type        = string
}

variable "ephemeral_storage_gib" {
  description = "Ephemeral storage per task, GiB (RocksDB state, rebuilt from changelogs)."
  type        = number
}

variable "partitions" {
  description = "Partition count of the pipeline's topics (the workers' FRAUD_PARTITIONS)."
  type        = number
}

variable "topic_replication" {
  description = "Replication factor of the topics the workers create (FRAUD_TOPIC_REPLICATION)."
  type        = number
}

variable "desired_count" {
  description = "Workers at the first deployment, and the autoscaling minimum."
  type        = number
}

variable "max_count" {
  description = "Autoscaling maximum; null means the partition count."
  type        = number
  default     = null
}

variable "app_id" {
  description = "FRAUD_APP_ID: the consumer group and the prefix of Faust's internal topics."
  type        = string
}

variable "topics" {
  description = "Names of the pipeline's topics."
  type = object({
    payments     = string
    alerts       = string
    dlq          = string
    rules        = string
    lists        = string
    suppressions = string
  })
}

variable "create_topics_script" {
  description = "Source of infra/terraform/topics.py, run by the create-topics task as `python -c`."
  type        = string
}

variable "put_rules_script" {
  description = "Source of infra/terraform/put_rules.py, run by the put-rules task as `python -c`."
  type        = string
}

variable "worker_entry_script" {
  description = "Source of infra/terraform/worker_entry.py, the worker container's `python -c` entry point (sets FRAUD_WEB_HOST to the task's address)."
  type        = string
}

variable "web_port" {
  description = "The worker's web port (FRAUD_WEB_PORT): the target group's and the container health check's."
  type        = number
}

variable "target_group_arn" {
  description = "The load balancer's target group of the workers' web port (modules/web)."
  type        = string
}

variable "grace_period_seconds" {
  description = "The service's health_check_grace_period_seconds: how long after a task starts ECS ignores its failing container and load-balancer health checks."
  type        = number
}

variable "environment" {
  description = "Further FRAUD_* settings for the workers; the ones this module sets win."
  type        = map(string)
  default     = {}
}

variable "api_token_secret_arn" {
  description = "Secrets Manager secret injected as FRAUD_API_TOKEN (rule writes over HTTP); null: none."
  type        = string
  default     = null
}

variable "subnet_ids" {
  description = "Private subnets of the tasks."
  type        = list(string)
}

variable "security_group_id" {
  description = "The workers' security group (the only one MSK admits)."
  type        = string
}

variable "network_ready" {
  description = "module.network.workers_network_ready: the create-topics task run by the apply waits for the endpoints and security-group rules it needs."
  type        = bool
}

variable "bootstrap_brokers" {
  description = "MSK's IAM/TLS bootstrap brokers, host:port,host:port."
  type        = string
}

variable "cluster_arn" {
  description = "ARN of the MSK cluster."
  type        = string
}

variable "cluster_name" {
  description = "Name of the MSK cluster (dimension of its lag metrics)."
  type        = string
}

variable "topic_arn_prefix" {
  description = "ARN prefix of the cluster's topics (append /<topic>)."
  type        = string
}

variable "group_arn_prefix" {
  description = "ARN prefix of the cluster's consumer groups (append /<group>)."
  type        = string
}

variable "alerts_table_name" {
  description = "The alerts table (FRAUD_DYNAMODB_TABLE)."
  type        = string
}

variable "cases_table_name" {
  description = "The cases table (FRAUD_CASES_TABLE)."
  type        = string
}

variable "cases_table_arn" {
  description = "ARN of the cases table."
  type        = string
}

variable "alerts_table_arn" {
  description = "ARN of the alerts table."
  type        = string
}

variable "archive_bucket_arn" {
  description = "ARN of the archive bucket."
  type        = string
}

variable "archive_prefix" {
  description = "The archive's key prefix in the bucket."
  type        = string
}

variable "archive_bucket" {
  description = "Name of the archive bucket (it also holds the rule files, under rules_prefix)."
  type        = string
}

variable "rules_prefix" {
  description = "Key prefix of the rule files in the archive bucket; the put-rules task may read only these."
  type        = string
}

variable "archive_url" {
  description = "FRAUD_ARCHIVE_URL (s3://bucket/prefix)."
  type        = string
}

variable "kms_key_arn" {
  description = "The stack's KMS key (table, archive, log group, secrets)."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the workers' log group, in days."
  type        = number
}

variable "lag_scale_out_threshold" {
  description = "Records of lag on the payments topic above which a worker is added."
  type        = number
}

variable "lag_scale_in_threshold" {
  description = "Records of lag below which (with low CPU) a worker is removed."
  type        = number
}

variable "scale_in_cpu_percent" {
  description = "Average CPU % below which (with low lag) a worker is removed."
  type        = number
}

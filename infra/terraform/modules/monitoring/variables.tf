variable "name" {
  description = "Prefix of every resource name; also the dashboard's name."
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key of the alarm topic (its key policy admits CloudWatch)."
  type        = string
}

variable "alarm_email" {
  description = "E-mail address subscribed to the alarm topic; null: subscribe yourself."
  type        = string
  default     = null
}

variable "app_id" {
  description = "The workers' consumer group (FRAUD_APP_ID); the archive's group is <app_id>-archive."
  type        = string
}

variable "topics" {
  description = "Names of the pipeline's topics."
  type = object({
    payments = string
    alerts   = string
    dlq      = string
    rules    = string
  })
}

variable "msk_cluster_name" {
  description = "The MSK cluster (dimension of its metrics)."
  type        = string
}

variable "broker_count" {
  description = "Brokers in the cluster (Broker ID 1..N)."
  type        = number
}

variable "ecs_cluster_name" {
  description = "The workers' ECS cluster."
  type        = string
}

variable "service_name" {
  description = "The workers' ECS service."
  type        = string
}

variable "load_balancer_arn_suffix" {
  description = "The web endpoints' load balancer (CloudWatch dimension LoadBalancer)."
  type        = string
}

variable "target_group_arn_suffix" {
  description = "The workers' target group (CloudWatch dimension TargetGroup)."
  type        = string
}

variable "workers_log_group_name" {
  description = "The workers' log group, where the metric filters look."
  type        = string
}

variable "notifier_function_name" {
  description = "The notifier Lambda."
  type        = string
}

variable "failure_queue_name" {
  description = "The notifier's on-failure SQS queue."
  type        = string
}

variable "lag_alarm_seconds" {
  description = "Detection or sink lag, in seconds, that pages."
  type        = number
}

variable "archive_lag_alarm_seconds" {
  description = "Archive lag, in seconds, that pages (a roll interval behind is normal)."
  type        = number
}

variable "dlq_alarm_per_second" {
  description = "Records per second into the DLQ topic, sustained 5 minutes, that page."
  type        = number
}

variable "msk_disk_alarm_percent" {
  description = "Broker disk use, in percent, that pages."
  type        = number
  default     = 80
}

# --- the stack -----------------------------------------------------------------------------

variable "region" {
  description = "AWS region of the whole stack: the one place it is set (the provider's; everything else reads it back, and worker_image must be in this region's ECR)."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Prefix of every resource name (the alerts table is <name>_alerts, log groups /<name>/...)."
  type        = string
  default     = "fraud"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,19}$", var.name))
    error_message = "name must be 2-20 lower-case letters, digits or '-', starting with a letter (it goes into bucket and cluster names)."
  }
}

variable "tags" {
  description = "Extra tags on every resource (Project and Stack are always set)."
  type        = map(string)
  default     = {}
}

variable "deletion_protection" {
  description = "Protect the DynamoDB tables from deletion; turn off before a deliberate `terraform destroy`."
  type        = bool
  default     = true
}

variable "log_retention_days" {
  description = "Retention of every log group, in days (a year: the audit trail a payment system is asked for)."
  type        = number
  default     = 365
  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be one of CloudWatch Logs' retention values (e.g. 30, 90, 365, 731)."
  }
}

# --- network -------------------------------------------------------------------------------

variable "vpc_cidr" {
  description = "CIDR block of the VPC; each availability zone gets a 1/16 slice as its private subnet."
  type        = string
  default     = "10.40.0.0/16"
  validation {
    condition     = can(cidrnetmask(var.vpc_cidr))
    error_message = "vpc_cidr must be an IPv4 CIDR block such as 10.40.0.0/16."
  }
}

variable "availability_zone_letters" {
  description = "The region's availability zones to use, by letter (eu-west-1 + a = eu-west-1a): one private subnet and kafka_brokers_per_az brokers each. MSK accepts 2 or 3. Named, so a zone AWS adds later moves nothing."
  type        = list(string)
  default     = ["a", "b", "c"]
  validation {
    condition     = contains([2, 3], length(var.availability_zone_letters)) && alltrue([for letter in var.availability_zone_letters : can(regex("^[a-z]$", letter))])
    error_message = "availability_zone_letters must hold 2 or 3 single letters (MSK spreads brokers over 2 or 3 zones)."
  }
}

# --- Kafka (MSK) and the topics ------------------------------------------------------------
#
# Sizing: the defaults of the Kafka and worker variables below are the 100 000 payments/s row
# of the sizing table (README, "Sizing"; the arithmetic in docs/operations/scaling.md#sizing,
# computed by `python -m bench.sizing` from the measured per-worker figures). For another
# rate, run it with --rate and set what it prints; tests/infra/test_sizing.py holds these
# defaults and terraform.tfvars.example to the table.

variable "kafka_version" {
  description = "Apache Kafka version of the MSK brokers (3.8.x: MSK's recommended version; x takes its patch releases)."
  type        = string
  default     = "3.8.x"
}

variable "kafka_instance_type" {
  description = "MSK broker instance type (the sizing table's: kafka.m7g.xlarge for 100 000 payments/s, kafka.m7g.2xlarge for 1 000 000)."
  type        = string
  default     = "kafka.m7g.xlarge"
}

variable "kafka_brokers_per_az" {
  description = "Brokers per availability zone (the cluster has this many times the zone count; the sizing table's brokers divided by the zones)."
  type        = number
  default     = 1
  validation {
    condition     = var.kafka_brokers_per_az >= 1
    error_message = "kafka_brokers_per_az must be at least 1."
  }
}

variable "kafka_volume_size_gib" {
  description = "EBS storage per broker, GiB: its share of kafka_retention_hours of records at 1.5 times the planned rate (the sizing table's; 6 900 GiB holds 24 h of 100 000 payments/s on 3 brokers)."
  type        = number
  default     = 6900
  validation {
    condition     = var.kafka_volume_size_gib >= 1 && var.kafka_volume_size_gib <= 16384
    error_message = "kafka_volume_size_gib must be between 1 and 16384."
  }
}

variable "kafka_retention_hours" {
  description = "Hours the brokers keep payments.raw, fraud.alerts, payments.dlq and the repartition topic (log.retention.hours; the changelogs and fraud.rules have their own). Replays and a lagging archive or sink need it; history is the Parquet archive's. kafka_volume_size_gib must hold it."
  type        = number
  default     = 24
  validation {
    condition     = var.kafka_retention_hours >= 1 && var.kafka_retention_hours == floor(var.kafka_retention_hours)
    error_message = "kafka_retention_hours must be a whole number of hours, at least 1."
  }
}

variable "kafka_enhanced_monitoring" {
  description = "MSK enhanced monitoring: PER_TOPIC_PER_PARTITION gives the per-topic rates and the per-group lag that alarms and autoscaling read."
  type        = string
  default     = "PER_TOPIC_PER_PARTITION"
  validation {
    condition     = contains(["PER_TOPIC_PER_BROKER", "PER_TOPIC_PER_PARTITION"], var.kafka_enhanced_monitoring)
    error_message = "The DLQ alarm needs per-topic metrics: PER_TOPIC_PER_BROKER or PER_TOPIC_PER_PARTITION."
  }
}

variable "partitions" {
  description = "Partitions of payments.raw, fraud.alerts and payments.dlq (and of Faust's internal topics): the most workers that can share the load, fixed once the topics exist. fraud.rules always has 1. The sizing table's: 12 for 100 000 payments/s, 84 for 1 000 000."
  type        = number
  default     = 12
  validation {
    condition     = var.partitions >= 1 && var.partitions == floor(var.partitions)
    error_message = "partitions must be a positive whole number."
  }
}

variable "topic_replication" {
  description = "Replication factor of every topic (min.insync.replicas is one less); at most the broker count."
  type        = number
  default     = 3
  validation {
    condition     = var.topic_replication >= 1 && var.topic_replication <= length(var.availability_zone_letters) * var.kafka_brokers_per_az
    error_message = "topic_replication must be between 1 and the number of brokers (zones * kafka_brokers_per_az)."
  }
}

variable "app_id" {
  description = "FRAUD_APP_ID: the workers' consumer group and the prefix of Faust's internal topics."
  type        = string
  default     = "fraud-detection"
}

variable "topic_payments" {
  description = "The payments topic (FRAUD_TOPIC_PAYMENTS)."
  type        = string
  default     = "payments.raw"
}

variable "topic_alerts" {
  description = "The alerts topic (FRAUD_TOPIC_ALERTS)."
  type        = string
  default     = "fraud.alerts"
}

variable "topic_dlq" {
  description = "The dead-letter topic (FRAUD_TOPIC_DLQ)."
  type        = string
  default     = "payments.dlq"
}

variable "topic_rules" {
  description = "The compacted rules topic (FRAUD_TOPIC_RULES)."
  type        = string
  default     = "fraud.rules"
}

variable "topic_lists" {
  description = "The compacted lists topic (FRAUD_TOPIC_LISTS)."
  type        = string
  default     = "fraud.lists"
}

variable "topic_suppressions" {
  description = "The compacted suppressions topic (FRAUD_TOPIC_SUPPRESSIONS)."
  type        = string
  default     = "fraud.suppressions"
}

# --- the workers (ECS Fargate) -------------------------------------------------------------

variable "worker_image" {
  description = "The project's image (the repository's Dockerfile) in ECR, e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com/fraud-detection:1.0.0. ECR only: the VPC has no route to other registries."
  type        = string
  validation {
    condition     = can(regex("^[0-9]{12}\\.dkr\\.ecr\\.[a-z0-9-]+\\.amazonaws\\.com/[^:@]+([:@].+)?$", var.worker_image))
    error_message = "worker_image must be an ECR image URI (<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>)."
  }
}

variable "worker_cpu" {
  description = "Fargate CPU units per worker (1024 = 1 vCPU): a Faust worker decides on one core (its archive runs beside it in a second process, about a fifth of a vCPU at the per-worker rate), so more CPU buys little; add workers instead (the sizing table)."
  type        = number
  default     = 1024
}

variable "worker_memory" {
  description = "Fargate memory per worker, MiB (must suit worker_cpu)."
  type        = number
  default     = 4096
}

variable "worker_cpu_architecture" {
  description = "X86_64 or ARM64: the architecture worker_image was built for."
  type        = string
  default     = "X86_64"
  validation {
    condition     = contains(["X86_64", "ARM64"], var.worker_cpu_architecture)
    error_message = "worker_cpu_architecture must be X86_64 or ARM64."
  }
}

variable "worker_ephemeral_storage_gib" {
  description = "Ephemeral storage per worker task, GiB: RocksDB state of its partitions (and standbys), rebuilt from the changelogs at start."
  type        = number
  default     = 50
  validation {
    condition     = var.worker_ephemeral_storage_gib >= 21 && var.worker_ephemeral_storage_gib <= 200
    error_message = "worker_ephemeral_storage_gib must be between 21 and 200 (Fargate's range)."
  }
}

variable "desired_count" {
  description = "Workers at the first deployment, and the autoscaling minimum; at most the partition count. The sizing table's workers for the planned rate: 4 for 100 000 payments/s."
  type        = number
  default     = 4
  validation {
    condition     = var.desired_count >= 1 && var.desired_count <= var.partitions
    error_message = "desired_count must be between 1 and partitions: a worker beyond the partition count holds no partition."
  }
}

variable "max_count" {
  description = "Autoscaling maximum; null means the partition count (never more: an extra worker would idle)."
  type        = number
  default     = null
  validation {
    condition     = var.max_count == null || (coalesce(var.max_count, 0) >= var.desired_count && coalesce(var.max_count, 0) <= var.partitions)
    error_message = "max_count must lie between desired_count and partitions."
  }
}

variable "worker_environment" {
  description = "Further FRAUD_* settings for the workers (e.g. FRAUD_ALLOWED_LATENESS); the ones Terraform sets (broker, Kafka security, table, region, archive, topics, partitions) win."
  type        = map(string)
  default     = {}
  validation {
    condition     = alltrue([for key in keys(var.worker_environment) : startswith(key, "FRAUD_")])
    error_message = "worker_environment takes FRAUD_* settings only."
  }
}

variable "api_token_secret_arn" {
  description = "A Secrets Manager secret (encrypted with this stack's key) whose value becomes FRAUD_API_TOKEN; null: rule writes over HTTP stay refused (use the admin task)."
  type        = string
  default     = null
}

variable "health_check_grace_period_seconds" {
  description = "Seconds after a worker task starts during which ECS ignores its failing health checks (container and load balancer): above the longest table recovery a new task may need before /healthz passes. At least 390 (the container check's 300 s start period and 3 failures 30 s apart)."
  type        = number
  default     = 600
  validation {
    condition     = var.health_check_grace_period_seconds >= 390
    error_message = "health_check_grace_period_seconds must be at least 390: the container health check's start period (300 s) plus three failed checks 30 s apart."
  }
}

variable "lag_scale_out_threshold" {
  description = "Records of detection lag on the payments topic, sustained 3 minutes, that add a worker (4x adds two). About 10 s of payments at the planned rate: a group that keeps up trails by about a second (it commits every second)."
  type        = number
  default     = 1000000
}

variable "lag_scale_in_threshold" {
  description = "Records of lag under which, with CPU under scale_in_cpu_percent for 15 minutes, a worker is removed: about 1 s of payments at the planned rate."
  type        = number
  default     = 100000
}

variable "scale_in_cpu_percent" {
  description = "Average CPU % of the workers under which (with low lag) one is removed."
  type        = number
  default     = 30
}

# --- the web endpoints (internal load balancer) ---------------------------------------------

variable "web_allowed_cidrs" {
  description = "IPv4 CIDRs admitted to the internal load balancer of the workers' web endpoints (your VPN or Direct Connect ranges); null: the VPC's own CIDR only."
  type        = list(string)
  default     = null
  validation {
    condition     = var.web_allowed_cidrs == null || alltrue([for cidr in coalesce(var.web_allowed_cidrs, []) : can(cidrnetmask(cidr)) && cidr != "0.0.0.0/0"])
    error_message = "web_allowed_cidrs must hold IPv4 CIDR blocks, not 0.0.0.0/0."
  }
}

variable "web_certificate_arn" {
  description = "ACM certificate (same region) for an HTTPS listener on 443; null: plain HTTP on 80. Needed before the API token (rule writes over HTTP) is used."
  type        = string
  default     = null
}

# --- the archive (S3) ----------------------------------------------------------------------

variable "archive_prefix" {
  description = "Key prefix of the Parquet archive in its bucket (FRAUD_ARCHIVE_URL=s3://<bucket>/<prefix>)."
  type        = string
  default     = "archive"
  validation {
    condition     = can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", var.archive_prefix))
    error_message = "archive_prefix must be a key prefix without leading or trailing '/'."
  }
}

variable "rules_prefix" {
  description = "Key prefix, in the archive bucket, of the rule files the put-rules task publishes (s3://<bucket>/<prefix>/<file>): the only objects its role may read; the workers may not read it."
  type        = string
  default     = "rules"
  validation {
    condition     = can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", var.rules_prefix)) && !startswith("${var.rules_prefix}/", "${var.archive_prefix}/") && !startswith("${var.archive_prefix}/", "${var.rules_prefix}/")
    error_message = "rules_prefix must be a key prefix without leading or trailing '/', apart from archive_prefix (neither inside the other)."
  }
}

variable "archive_ia_days" {
  description = "Days after which archive files move to S3 Standard-IA (at least 30)."
  type        = number
  default     = 30
  validation {
    condition     = var.archive_ia_days >= 30
    error_message = "S3 moves objects to STANDARD_IA after 30 days at the earliest."
  }
}

variable "archive_glacier_ir_days" {
  description = "Days after which archive files move to S3 Glacier Instant Retrieval (at least 30 after Standard-IA)."
  type        = number
  default     = 90
  validation {
    condition     = var.archive_glacier_ir_days >= var.archive_ia_days + 30
    error_message = "archive_glacier_ir_days must be at least archive_ia_days + 30 (Standard-IA's minimum storage)."
  }
}

variable "archive_noncurrent_days" {
  description = "Days an overwritten or deleted archive file's previous version is kept."
  type        = number
  default     = 30
}

variable "archive_expiration_days" {
  description = "Days after which archive files are deleted; null keeps history forever."
  type        = number
  default     = null
}

# --- the notifier (Lambda) -----------------------------------------------------------------

variable "lambda_zip" {
  description = "The notifier package built by `make lambda-zip`, relative to this directory."
  type        = string
  default     = "../../build/notifier.zip"
}

variable "slack_enabled" {
  description = "Post alerts to Slack (Terraform creates the secret for the webhook URL or bot token, never its value); false: SNS only."
  type        = bool
  default     = true
}

variable "slack_channel" {
  description = "Post with a Slack bot token (chat.postMessage, scope chat:write) to this channel, e.g. \"#fraud-alerts\" or a channel id; null: with an incoming webhook (whose URL names its channel)."
  type        = string
  default     = null
  validation {
    condition     = var.slack_channel == null || can(regex("^\\S+$", coalesce(var.slack_channel, "-")))
    error_message = "slack_channel must be a channel name or id without spaces, or null for a webhook."
  }
}

variable "slack_actions_enabled" {
  description = "Serve the Slack message's Fraud / Not fraud buttons: a Lambda function URL (the Slack app's interactivity URL) closing cases through the workers' close API. Needs slack_enabled and api_token_secret_arn."
  type        = bool
  default     = false
  validation {
    condition     = !var.slack_actions_enabled || (var.slack_enabled && var.api_token_secret_arn != null)
    error_message = "slack_actions_enabled needs slack_enabled = true and api_token_secret_arn (the close API's token)."
  }
}

variable "inspect_base_url" {
  description = "Base URL of the workers' web endpoints, for the 'Inspect card' link in Slack; empty: no link."
  type        = string
  default     = ""
}

variable "notifier_batch_size" {
  description = "Stream records per notifier invocation."
  type        = number
  default     = 100
}

variable "notifier_maximum_retry_attempts" {
  description = "Retries of a failing stream batch (bisected) before its records go to the failure queue."
  type        = number
  default     = 10
}

# --- monitoring ----------------------------------------------------------------------------

variable "alarm_email" {
  description = "E-mail address subscribed to the alarm topic (confirm the mail AWS sends); null: none."
  type        = string
  default     = null
}

variable "lag_alarm_seconds" {
  description = "Detection or sink lag, in seconds (MSK's EstimatedMaxTimeLag), sustained 5 minutes, that pages."
  type        = number
  default     = 60
}

variable "archive_lag_alarm_seconds" {
  description = "Archive lag, in seconds, that pages (files roll every 300 s, so up to that is normal)."
  type        = number
  default     = 1800
}

variable "dlq_alarm_per_second" {
  description = "Records per second into the DLQ topic, sustained 5 minutes, that page."
  type        = number
  default     = 1
}

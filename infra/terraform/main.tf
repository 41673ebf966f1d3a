# The whole system on AWS: MSK (Kafka), the Faust workers on ECS Fargate, the alerts table
# and its stream, the notifier Lambda, the Parquet archive on S3, alarms and a dashboard.
#
#   network ──► kafka (MSK, IAM auth, TLS) ◄── workers (ECS Fargate) ──► alerts (DynamoDB + stream)
#                                                  ▲  │                       │
#           web (internal ALB, VPN/DX CIDRs) ──────┘  └──► archive (S3)       └──► notifier (Lambda ──► Slack, SNS)
#   kms: one key for everything at rest        monitoring: alarms ──► SNS, dashboard
#
# Not validated on this machine: it reaches no Terraform registry. `terraform init &&
# terraform validate && terraform plan` before the first apply; docs/how-to/deploy-aws.md.

# The region is set here, once: var.region (terraform.tfvars). Everything else, the zones
# below, every module's ARNs, endpoints and log settings, the workers' FRAUD_AWS_REGION and
# AWS_REGION and the `--region` of every command in outputs.tf, reads it back from the
# provider (data.aws_region.current), and modules/workers refuses, at plan, a worker_image
# pushed to another region's ECR (the VPC reaches ECR only through this region's endpoints).
provider "aws" {
  region = var.region
  default_tags {
    tags = merge({ Project = "fraud-detection", Stack = var.name }, var.tags)
  }
}

data "aws_region" "current" {}

locals {
  # FRAUD_WEB_PORT of the workers: their target group, security-group rules, health checks.
  web_port           = 6066
  region             = data.aws_region.current.name
  availability_zones = [for letter in var.availability_zone_letters : "${local.region}${letter}"]
  topics = {
    payments     = var.topic_payments
    alerts       = var.topic_alerts
    dlq          = var.topic_dlq
    rules        = var.topic_rules
    lists        = var.topic_lists
    suppressions = var.topic_suppressions
  }
  # Secrets Manager only when ECS must fetch the API token for the workers.
  interface_endpoints = concat(
    ["ecr.api", "ecr.dkr", "logs"],
    var.api_token_secret_arn == null ? [] : ["secretsmanager"],
  )
}

module "kms" {
  source = "./modules/kms"
  name   = var.name
}

module "network" {
  source              = "./modules/network"
  name                = var.name
  cidr                = var.vpc_cidr
  availability_zones  = local.availability_zones
  interface_endpoints = local.interface_endpoints
  archive_bucket_arn  = module.archive.bucket_arn
  alerts_table_arn    = module.alerts.table_arn
  kms_key_arn         = module.kms.key_arn
  log_retention_days  = var.log_retention_days
  web_port            = local.web_port
}

module "kafka" {
  source              = "./modules/kafka"
  name                = var.name
  kafka_version       = var.kafka_version
  instance_type       = var.kafka_instance_type
  brokers_per_az      = var.kafka_brokers_per_az
  volume_size_gib     = var.kafka_volume_size_gib
  retention_hours     = var.kafka_retention_hours
  replication_factor  = var.topic_replication
  enhanced_monitoring = var.kafka_enhanced_monitoring
  subnet_ids          = module.network.private_subnet_ids
  security_group_id   = module.network.msk_security_group_id
  kms_key_arn         = module.kms.key_arn
  log_retention_days  = var.log_retention_days
}

module "alerts" {
  source              = "./modules/alerts"
  table_name          = "${var.name}_alerts"
  kms_key_arn         = module.kms.key_arn
  deletion_protection = var.deletion_protection
}

module "cases" {
  source              = "./modules/cases"
  table_name          = "${var.name}_cases"
  kms_key_arn         = module.kms.key_arn
  deletion_protection = var.deletion_protection
}

module "archive" {
  source          = "./modules/archive"
  name            = var.name
  prefix          = var.archive_prefix
  kms_key_arn     = module.kms.key_arn
  ia_days         = var.archive_ia_days
  glacier_ir_days = var.archive_glacier_ir_days
  noncurrent_days = var.archive_noncurrent_days
  expiration_days = var.archive_expiration_days
}

module "web" {
  source                    = "./modules/web"
  name                      = var.name
  vpc_id                    = module.network.vpc_id
  subnet_ids                = module.network.private_subnet_ids
  workers_security_group_id = module.network.workers_security_group_id
  web_port                  = local.web_port
  allowed_cidrs             = var.web_allowed_cidrs == null ? [var.vpc_cidr] : var.web_allowed_cidrs
  certificate_arn           = var.web_certificate_arn
  deletion_protection       = var.deletion_protection
}

# The bearer token authorises rule writes: over plain HTTP it crosses the network in clear.
check "api_token_only_over_https" {
  assert {
    condition     = var.api_token_secret_arn == null || var.web_certificate_arn != null
    error_message = "api_token_secret_arn is set but web_certificate_arn is not: the token for rule writes would cross the load balancer in clear HTTP. Give the listener a certificate."
  }
}

module "workers" {
  source                  = "./modules/workers"
  name                    = var.name
  image                   = var.worker_image
  cpu                     = var.worker_cpu
  memory                  = var.worker_memory
  cpu_architecture        = var.worker_cpu_architecture
  ephemeral_storage_gib   = var.worker_ephemeral_storage_gib
  partitions              = var.partitions
  topic_replication       = var.topic_replication
  desired_count           = var.desired_count
  max_count               = var.max_count
  app_id                  = var.app_id
  topics                  = local.topics
  environment             = var.worker_environment
  api_token_secret_arn    = var.api_token_secret_arn
  subnet_ids              = module.network.private_subnet_ids
  security_group_id       = module.network.workers_security_group_id
  network_ready           = module.network.workers_network_ready
  bootstrap_brokers       = module.kafka.bootstrap_brokers
  cluster_arn             = module.kafka.cluster_arn
  cluster_name            = module.kafka.cluster_name
  topic_arn_prefix        = module.kafka.topic_arn_prefix
  group_arn_prefix        = module.kafka.group_arn_prefix
  alerts_table_name       = module.alerts.table_name
  alerts_table_arn        = module.alerts.table_arn
  cases_table_name        = module.cases.table_name
  cases_table_arn         = module.cases.table_arn
  archive_bucket_arn      = module.archive.bucket_arn
  archive_prefix          = var.archive_prefix
  archive_url             = module.archive.url
  archive_bucket          = module.archive.bucket
  rules_prefix            = var.rules_prefix
  kms_key_arn             = module.kms.key_arn
  log_retention_days      = var.log_retention_days
  lag_scale_out_threshold = var.lag_scale_out_threshold
  lag_scale_in_threshold  = var.lag_scale_in_threshold
  scale_in_cpu_percent    = var.scale_in_cpu_percent
  web_port                = local.web_port
  target_group_arn        = module.web.target_group_arn
  grace_period_seconds    = var.health_check_grace_period_seconds
  worker_entry_script     = file("${path.module}/worker_entry.py")
  create_topics_script    = file("${path.module}/topics.py")
  put_rules_script        = file("${path.module}/put_rules.py")
}

module "notifier" {
  source                 = "./modules/notifier"
  name                   = var.name
  lambda_zip             = var.lambda_zip
  alerts_table_arn       = module.alerts.table_arn
  alerts_stream_arn      = module.alerts.stream_arn
  inspect_base_url       = var.inspect_base_url
  cases_table_name       = module.cases.table_name
  cases_table_arn        = module.cases.table_arn
  slack_enabled          = var.slack_enabled
  slack_channel          = var.slack_channel
  batch_size             = var.notifier_batch_size
  maximum_retry_attempts = var.notifier_maximum_retry_attempts
  kms_key_arn            = module.kms.key_arn
  log_retention_days     = var.log_retention_days
  deletion_protection    = var.deletion_protection
}

# Slack's buttons (Fraud / Not fraud) close cases through the workers' close API; their
# interactivity URL is output slack_interactivity_url (docs/how-to/slack.md).
module "slack_actions" {
  source                = "./modules/slack_actions"
  count                 = var.slack_actions_enabled ? 1 : 0
  name                  = var.name
  lambda_zip            = var.lambda_zip
  api_token_secret_arn  = var.api_token_secret_arn
  cases_api_url         = module.web.url
  vpc_id                = module.network.vpc_id
  subnet_ids            = module.network.private_subnet_ids
  alb_security_group_id = module.web.security_group_id
  replay_table_name     = module.notifier.idempotency_table_name
  replay_table_arn      = module.notifier.idempotency_table_arn
  kms_key_arn           = module.kms.key_arn
  log_retention_days    = var.log_retention_days
}

module "monitoring" {
  source                    = "./modules/monitoring"
  name                      = var.name
  kms_key_arn               = module.kms.key_arn
  alarm_email               = var.alarm_email
  app_id                    = var.app_id
  topics                    = local.topics
  msk_cluster_name          = module.kafka.cluster_name
  broker_count              = module.kafka.broker_count
  ecs_cluster_name          = module.workers.cluster_name
  service_name              = module.workers.service_name
  workers_log_group_name    = module.workers.log_group_name
  load_balancer_arn_suffix  = module.web.load_balancer_arn_suffix
  target_group_arn_suffix   = module.web.target_group_arn_suffix
  notifier_function_name    = module.notifier.function_name
  failure_queue_name        = module.notifier.failure_queue_name
  lag_alarm_seconds         = var.lag_alarm_seconds
  archive_lag_alarm_seconds = var.archive_lag_alarm_seconds
  dlq_alarm_per_second      = var.dlq_alarm_per_second
}

# The single-file layout this replaces kept these at the root: move, do not recreate, them
# (the alerts table above all) in a stack applied before the split.
moved {
  from = aws_dynamodb_table.alerts
  to   = module.alerts.aws_dynamodb_table.alerts
}

moved {
  from = aws_dynamodb_table.notifier_idempotency
  to   = module.notifier.aws_dynamodb_table.idempotency
}

moved {
  from = aws_sns_topic.alerts
  to   = module.notifier.aws_sns_topic.alerts
}

moved {
  from = aws_iam_role.notifier
  to   = module.notifier.aws_iam_role.notifier
}

moved {
  from = aws_iam_role_policy.notifier
  to   = module.notifier.aws_iam_role_policy.notifier
}

moved {
  from = aws_lambda_function.notifier
  to   = module.notifier.aws_lambda_function.notifier
}

moved {
  from = aws_lambda_event_source_mapping.alerts_stream
  to   = module.notifier.aws_lambda_event_source_mapping.alerts_stream
}

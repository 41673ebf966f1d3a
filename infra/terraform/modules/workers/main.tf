# The Faust workers on ECS Fargate: one service, a task per worker, scaled on consumer lag
# between var.desired_count and var.max_count (at most one task per partition: a task
# beyond the partition count would hold no partition).
#
# State: RocksDB lives on the task's ephemeral storage (FRAUD_DATADIR, a volume on the
# var.ephemeral_storage_gib the task gets). It is a cache of the changelog topics: a task
# that starts, moves or is replaced restores its partitions' tables from the changelogs
# before /readyz turns ready, so nothing is lost with the disk; a bigger state only makes
# that recovery take longer.
#
# Also here: one-shot admin task definitions on the same image, with a role of their own,
# that create the pipeline's topics (infra/terraform/topics.py) and publish rules.

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  region     = data.aws_region.current.name

  # <account>.dkr.ecr.<region>.amazonaws.com/<repository>[:tag|@digest]
  ecr            = regex("^([0-9]{12})\\.dkr\\.ecr\\.([a-z0-9-]+)\\.amazonaws\\.com/([^:@]+)", var.image)
  repository_arn = "arn:aws:ecr:${local.ecr[1]}:${local.ecr[0]}:repository/${local.ecr[2]}"

  # MSK's "host:port,host:port" as the app's "kafka://host:port;kafka://host:port".
  broker = join(";", [for b in split(",", var.bootstrap_brokers) : "kafka://${b}"])

  # What every task of the app needs to reach Kafka the way the workers do.
  kafka_environment = {
    FRAUD_APP_ID                  = var.app_id
    FRAUD_BROKER                  = local.broker
    FRAUD_KAFKA_SECURITY_PROTOCOL = "SASL_SSL"
    FRAUD_KAFKA_SASL_MECHANISM    = "AWS_MSK_IAM"
    FRAUD_AWS_REGION              = local.region
    AWS_REGION                    = local.region
    FRAUD_PARTITIONS              = tostring(var.partitions)
    FRAUD_TOPIC_REPLICATION       = tostring(var.topic_replication)
    FRAUD_TOPIC_PAYMENTS          = var.topics.payments
    FRAUD_TOPIC_ALERTS            = var.topics.alerts
    FRAUD_TOPIC_DLQ               = var.topics.dlq
    FRAUD_TOPIC_RULES             = var.topics.rules
    FRAUD_TOPIC_LISTS             = var.topics.lists
    FRAUD_TOPIC_SUPPRESSIONS      = var.topics.suppressions
  }

  # var.environment (any other FRAUD_* setting) first: the values Terraform manages win.
  worker_environment = merge(var.environment, local.kafka_environment, {
    FRAUD_STORE   = "rocksdb://"
    FRAUD_DATADIR = local.data_directory
    # The load balancer (modules/web) and the other workers (forwarded card lookups) ask it
    # at the task's address, which worker_entry.py advertises as FRAUD_WEB_HOST; the security
    # group admits the web port from those two only.
    FRAUD_WEB_BIND       = "0.0.0.0"
    FRAUD_WEB_PORT       = tostring(var.web_port)
    FRAUD_DYNAMODB_TABLE = var.alerts_table_name
    FRAUD_CASES_TABLE    = var.cases_table_name
    FRAUD_ARCHIVE_URL    = var.archive_url
  })

  admin_environment = merge(local.kafka_environment, {
    FRAUD_DATADIR = "/tmp/faust" # the CLI loads the app; /tmp is the only writable path
  })

  # Rule files of your own: the image is read-only and holds only the shipped rules.
  rules_s3_prefix = "s3://${var.archive_bucket}/${var.rules_prefix}/"
  # put_rules_from_s3_command's override names the file with the shell's $RULES_FILE: in
  # the single-quoted JSON the placeholder becomes '"$RULES_FILE"' (out of the single
  # quotes, expanded inside double ones, back in), so `eval` sends the name as the value.
  rules_file_placeholder    = "RULES_FILE_FROM_THE_SHELL"
  rules_file_from_the_shell = "'\"$RULES_FILE\"'"

  topic_arns = {
    for key, topic in var.topics : key => "${var.topic_arn_prefix}/${topic}"
  }
  # Faust's own topics: table changelogs, the repartition topic, the leader topic.
  internal_topics_arn = "${var.topic_arn_prefix}/${var.app_id}-*"

  log_configuration = {
    logDriver = "awslogs"
    options = {
      awslogs-group         = aws_cloudwatch_log_group.workers.name
      awslogs-region        = local.region
      awslogs-stream-prefix = "ecs"
    }
  }

  max_count = coalesce(var.max_count, var.partitions)

  # The container health check (seconds). ECS allows a start period of 300 s at most; the
  # service's grace period (var.grace_period_seconds) must outlast it and three failures.
  health_check = { interval = 30, timeout = 10, retries = 3, startPeriod = 300 }

  # The image's FRAUD_DATADIR, created there owned by its non-root user (UID 10001): a volume
  # mounted on a path the image has takes that owner.
  data_directory = "/var/lib/fraud-detection/worker"
}

resource "aws_cloudwatch_log_group" "workers" {
  name              = "/${var.name}/workers"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

resource "aws_ecs_cluster" "this" {
  name = var.name
  setting {
    name  = "containerInsights"
    value = "enabled" # RunningTaskCount and per-task CPU/memory for the dashboard and alarms
  }
}

# --- IAM: the execution role (ECS pulls the image, writes logs, reads the token secret) --

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-workers-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "execution" {
  # GetAuthorizationToken has no resource-level permissions: AWS accepts only "*" here.
  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }
  statement {
    sid       = "PullTheWorkerImage"
    actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
    resources = [local.repository_arn]
  }
  # The group is created above, so no logs:CreateLogGroup; ":*" is every log stream of this
  # one group (ECS names the streams at run time).
  statement {
    sid       = "WriteTheWorkersLogGroup"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.workers.arn}:*"]
  }
  dynamic "statement" {
    for_each = var.api_token_secret_arn == null ? [] : [var.api_token_secret_arn]
    content {
      sid       = "ReadTheApiToken"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [statement.value]
    }
  }
  dynamic "statement" {
    for_each = var.api_token_secret_arn == null ? [] : [var.api_token_secret_arn]
    content {
      sid       = "DecryptTheApiToken"
      actions   = ["kms:Decrypt"]
      resources = [var.kms_key_arn]
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["secretsmanager.${local.region}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "pull-log-secrets"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# --- IAM: the task role (what the worker itself may do) ----------------------------------

resource "aws_iam_role" "task" {
  name               = "${var.name}-workers-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "task" {
  # The sink: conditional puts of alerts (attribute_not_exists(alert_id)).
  statement {
    sid       = "WriteAlerts"
    actions   = ["dynamodb:PutItem", "dynamodb:DescribeTable"]
    resources = [var.alerts_table_arn]
  }

  # Cases: grouped by the sink in one transaction with the alert's row (puts, an update,
  # conditions), read and closed by the API and the CLI, listed from the by_status index.
  statement {
    sid = "GroupListAndCloseCases"
    actions = [
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:UpdateItem",
      "dynamodb:DeleteItem",
      "dynamodb:ConditionCheckItem",
      "dynamodb:Query",
      "dynamodb:DescribeTable",
    ]
    resources = [var.cases_table_arn, "${var.cases_table_arn}/index/by_status"]
  }

  # The archive: whole-file uploads (multipart), listing, reads for backtests, and the
  # deletion of files written past the committed offset before a crash.
  statement {
    sid = "ArchiveObjects"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = ["${var.archive_bucket_arn}/${var.archive_prefix}/*"]
  }
  # Listing is a bucket-level action. No s3:prefix condition: pyarrow's HeadBucket carries
  # no prefix and would be refused. The bucket holds the archive and the rule files
  # (var.rules_prefix), whose names a worker may so list but whose contents it may not read.
  statement {
    sid       = "ArchiveListing"
    actions   = ["s3:ListBucket"]
    resources = [var.archive_bucket_arn]
  }

  # The table, its stream and the archive are encrypted with the stack's key: usable only
  # through DynamoDB and S3.
  statement {
    sid       = "UseTheKeyThroughDynamoDbAndS3"
    actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
    resources = [var.kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["dynamodb.${local.region}.amazonaws.com", "s3.${local.region}.amazonaws.com"]
    }
  }

  # MSK IAM auth, this cluster only.
  statement {
    sid       = "ConnectToTheCluster"
    actions   = ["kafka-cluster:Connect", "kafka-cluster:DescribeCluster"]
    resources = [var.cluster_arn]
  }
  statement {
    sid       = "ReadAndWriteThePipelinesTopics"
    actions   = ["kafka-cluster:DescribeTopic", "kafka-cluster:ReadData", "kafka-cluster:WriteData"]
    resources = concat(values(local.topic_arns), [local.internal_topics_arn])
  }
  # A worker reads its state changelogs' retention.ms at start and refuses to start while one
  # deletes sooner than FRAUD_STATE_RETENTION (app/worker/partition_check.py).
  statement {
    sid       = "ReadTheChangelogsRetention"
    actions   = ["kafka-cluster:DescribeTopicDynamicConfiguration"]
    resources = [local.internal_topics_arn]
  }
  # Faust declares (CreateTopics) every topic an agent consumes at each start, and Kafka
  # checks CREATE before it answers "already exists": payments and alerts (made by the
  # create-topics task) and Faust's own changelog, repartition and leader topics.
  statement {
    sid     = "DeclareFaustsTopics"
    actions = ["kafka-cluster:CreateTopic"]
    resources = [
      local.topic_arns.payments,
      local.topic_arns.alerts,
      local.internal_topics_arn,
    ]
  }
  # The detection group (the app id) and the archive's own group (<app id>-archive).
  # exactly_once (unsupported, see the README) would also need the transactional-id actions.
  statement {
    sid       = "ThePipelinesConsumerGroups"
    actions   = ["kafka-cluster:DescribeGroup", "kafka-cluster:AlterGroup"]
    resources = ["${var.group_arn_prefix}/${var.app_id}", "${var.group_arn_prefix}/${var.app_id}-archive"]
  }
}

resource "aws_iam_role_policy" "task" {
  name   = "fraud-worker"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}

# --- the worker task and service ---------------------------------------------------------

resource "aws_ecs_task_definition" "worker" {
  family                   = "${var.name}-worker"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  ephemeral_storage {
    size_in_gib = var.ephemeral_storage_gib
  }

  # Bind mounts on the task's ephemeral storage: the only writable paths, since the root
  # filesystem is read-only.
  volume {
    name = "data"
  }
  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([
    {
      name      = "worker"
      image     = var.image
      essential = true
      # worker_entry.py sets FRAUD_WEB_HOST to the task's address, then becomes the image's
      # `faust -A app` with these arguments.
      entryPoint             = ["python", "-c"]
      command                = [var.worker_entry_script, "worker", "-l", "info"]
      environment            = [for k, v in local.worker_environment : { name = k, value = v }]
      secrets                = var.api_token_secret_arn == null ? [] : [{ name = "FRAUD_API_TOKEN", valueFrom = var.api_token_secret_arn }]
      readonlyRootFilesystem = true
      privileged             = false
      mountPoints = [
        { sourceVolume = "data", containerPath = local.data_directory, readOnly = false },
        { sourceVolume = "tmp", containerPath = "/tmp", readOnly = false },
      ]
      linuxParameters = {
        initProcessEnabled = true # reaps the backtests' child processes
      }
      # The image has no curl; the worker's Python asks its own /healthz (a 503 raises).
      # /healthz, not /readyz: liveness (stalled, crashed, failing) is what a replacement
      # cures; a worker still recovering its tables is not ready, yet not broken.
      healthCheck = merge(local.health_check, {
        command = ["CMD", "python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${var.web_port}/healthz', timeout=5)"]
      })
      # Time to commit and leave the group (LeaveGroup) before SIGKILL.
      stopTimeout      = 60
      logConfiguration = local.log_configuration
    },
  ])

  lifecycle {
    # The VPC has no internet route: tasks pull through this region's ECR endpoints only.
    precondition {
      condition     = local.ecr[1] == local.region
      error_message = "worker_image is in ECR of ${local.ecr[1]} but the stack is in ${local.region}: push the image to ${local.region} (the VPC reaches ECR only through its own region's endpoints), or set region to ${local.ecr[1]}."
    }
  }
}

resource "aws_ecs_service" "workers" {
  name                   = "${var.name}-workers"
  cluster                = aws_ecs_cluster.this.id
  task_definition        = aws_ecs_task_definition.worker.arn
  desired_count          = var.desired_count
  launch_type            = "FARGATE"
  platform_version       = "LATEST"
  enable_execute_command = false
  propagate_tags         = "SERVICE"

  # Start new tasks before stopping old ones: partitions move once per deployment step.
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  # A deployment whose tasks keep failing (3, or half the desired count) rolls back to the
  # last completed one. Not on account of the topics: the apply creates them first
  # (terraform_data.topics); nor of a slow start: for var.grace_period_seconds after a task
  # starts, ECS ignores its failing health checks (the container's and the load balancer's),
  # however long its tables take to recover. docs/how-to/deploy-aws.md explains the choice.
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }
  health_check_grace_period_seconds = var.grace_period_seconds

  # Each task's address in the target group; the load balancer checks /healthz too.
  load_balancer {
    target_group_arn = var.target_group_arn
    container_name   = "worker"
    container_port   = var.web_port
  }

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [var.security_group_id]
    assign_public_ip = false
  }

  lifecycle {
    # Application Auto Scaling owns the running count after the first apply.
    ignore_changes = [desired_count]
    precondition {
      condition     = var.desired_count <= var.partitions
      error_message = "desired_count must not exceed the partition count: a worker beyond it holds no partition."
    }
    precondition {
      condition     = var.grace_period_seconds >= local.health_check.startPeriod + local.health_check.interval * local.health_check.retries
      error_message = "The grace period must outlast the container health check's start period and three failed checks."
    }
  }

  # The topics exist before the first task starts (terraform_data.topics, below).
  depends_on = [aws_iam_role_policy.task, aws_iam_role_policy.execution, terraform_data.topics]
}

# --- autoscaling on consumer lag ---------------------------------------------------------
#
# Step scaling, not target tracking: the lag of a group that keeps up is ~0 whatever its
# size, so a lag target would shrink the service until it falls behind, and every
# resize costs a rebalance (seconds without decisions). Out: +1 task when the detection
# group's lag on the payments topic (MSK's SumOffsetLag) stays above the threshold for 3
# minutes, +2 when far above. In: -1 only after 15 minutes of both low lag and low CPU.

resource "aws_appautoscaling_target" "workers" {
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.this.name}/${aws_ecs_service.workers.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.desired_count
  max_capacity       = local.max_count

  lifecycle {
    precondition {
      condition     = local.max_count <= var.partitions && local.max_count >= var.desired_count
      error_message = "max_count must lie between desired_count and the partition count."
    }
  }
}

resource "aws_appautoscaling_policy" "scale_out" {
  name               = "${var.name}-workers-lag-scale-out"
  policy_type        = "StepScaling"
  service_namespace  = aws_appautoscaling_target.workers.service_namespace
  resource_id        = aws_appautoscaling_target.workers.resource_id
  scalable_dimension = aws_appautoscaling_target.workers.scalable_dimension

  step_scaling_policy_configuration {
    adjustment_type         = "ChangeInCapacity"
    cooldown                = 180
    metric_aggregation_type = "Maximum"
    # Bounds are relative to the alarm's threshold.
    step_adjustment {
      metric_interval_lower_bound = 0
      metric_interval_upper_bound = 4 * var.lag_scale_out_threshold
      scaling_adjustment          = 1
    }
    step_adjustment {
      metric_interval_lower_bound = 4 * var.lag_scale_out_threshold
      scaling_adjustment          = 2
    }
  }
}

resource "aws_appautoscaling_policy" "scale_in" {
  name               = "${var.name}-workers-idle-scale-in"
  policy_type        = "StepScaling"
  service_namespace  = aws_appautoscaling_target.workers.service_namespace
  resource_id        = aws_appautoscaling_target.workers.resource_id
  scalable_dimension = aws_appautoscaling_target.workers.scalable_dimension

  step_scaling_policy_configuration {
    adjustment_type         = "ChangeInCapacity"
    cooldown                = 600
    metric_aggregation_type = "Maximum"
    step_adjustment {
      metric_interval_lower_bound = 0
      scaling_adjustment          = -1
    }
  }
}

locals {
  lag_dimensions = {
    "Cluster Name"   = var.cluster_name
    "Consumer Group" = var.app_id
    "Topic"          = var.topics.payments
  }
}

resource "aws_cloudwatch_metric_alarm" "lag_high" {
  alarm_name          = "${var.name}-workers-lag-high"
  alarm_description   = "Scale out: the detection group is behind on ${var.topics.payments}."
  namespace           = "AWS/Kafka"
  metric_name         = "SumOffsetLag"
  dimensions          = local.lag_dimensions
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = var.lag_scale_out_threshold
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_appautoscaling_policy.scale_out.arn]
}

resource "aws_cloudwatch_metric_alarm" "idle" {
  alarm_name          = "${var.name}-workers-idle"
  alarm_description   = "Scale in: lag below ${var.lag_scale_in_threshold} and CPU below ${var.scale_in_cpu_percent}% for 15 minutes."
  evaluation_periods  = 15
  datapoints_to_alarm = 15
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_appautoscaling_policy.scale_in.arn]

  metric_query {
    id = "lag"
    metric {
      namespace   = "AWS/Kafka"
      metric_name = "SumOffsetLag"
      dimensions  = local.lag_dimensions
      stat        = "Maximum"
      period      = 60
    }
  }
  metric_query {
    id = "cpu"
    metric {
      namespace   = "AWS/ECS"
      metric_name = "CPUUtilization"
      dimensions = {
        ClusterName = aws_ecs_cluster.this.name
        ServiceName = aws_ecs_service.workers.name
      }
      stat   = "Average"
      period = 60
    }
  }
  metric_query {
    id          = "idle"
    expression  = "IF(lag < ${var.lag_scale_in_threshold} AND cpu < ${var.scale_in_cpu_percent}, 1, 0)"
    label       = "low lag and low CPU"
    return_data = true
  }
}

# --- the one-shot admin task: topics, rules ----------------------------------------------

resource "aws_iam_role" "admin" {
  name               = "${var.name}-admin-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "admin" {
  statement {
    sid       = "ConnectToTheCluster"
    actions   = ["kafka-cluster:Connect", "kafka-cluster:DescribeCluster"]
    resources = [var.cluster_arn]
  }
  # Create the four topics and read back their partition counts and cleanup policy.
  statement {
    sid = "CreateThePipelinesTopics"
    actions = [
      "kafka-cluster:CreateTopic",
      "kafka-cluster:DescribeTopic",
      "kafka-cluster:DescribeTopicDynamicConfiguration",
    ]
    resources = values(local.topic_arns)
  }
  # `faust -A app rules put|pause|delete ...` reads the rules topic and publishes to it.
  statement {
    sid       = "PublishRules"
    actions   = ["kafka-cluster:ReadData", "kafka-cluster:WriteData"]
    resources = [local.topic_arns.rules]
  }
  # put-rules downloads a rule file: objects under the rules prefix only, never the archive
  # (no listing either: a missing file reads as access denied).
  statement {
    sid       = "ReadRuleFiles"
    actions   = ["s3:GetObject"]
    resources = ["${var.archive_bucket_arn}/${var.rules_prefix}/*"]
  }
  statement {
    sid       = "DecryptRuleFilesThroughS3"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "admin" {
  name   = "topics-and-rules"
  role   = aws_iam_role.admin.id
  policy = data.aws_iam_policy_document.admin.json
}

# Three one-shot task definitions on the worker image, with the admin role:
# - create-topics: the worker image holds the installed app, not this repository's infra/,
#   so Terraform hands infra/terraform/topics.py (unit-tested there) to Python as its
#   program text (python -c);
# - rules: the image's own entry point (faust -A app) with a `rules ...` command; the
#   shipped default rules are package data of the installed app;
# - put-rules: infra/terraform/put_rules.py the same way: downloads $RULES_FILE from the
#   rules prefix (RULES_S3_PREFIX) to /tmp and becomes `faust -A app rules put <file>`.
locals {
  admin_container = {
    image                  = var.image
    essential              = true
    environment            = [for k, v in local.admin_environment : { name = k, value = v }]
    readonlyRootFilesystem = true
    privileged             = false
    mountPoints            = [{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }]
    logConfiguration       = merge(local.log_configuration, { options = merge(local.log_configuration.options, { awslogs-stream-prefix = "admin" }) })
  }
  admin_containers = {
    create-topics = merge(local.admin_container, {
      name       = "create-topics"
      entryPoint = ["python", "-c"]
      command    = [var.create_topics_script]
    })
    rules = merge(local.admin_container, {
      name    = "rules"
      command = ["rules", "list"]
    })
    put-rules = merge(local.admin_container, {
      name        = "put-rules"
      entryPoint  = ["python", "-c"]
      command     = [var.put_rules_script]
      environment = [for k, v in merge(local.admin_environment, { RULES_S3_PREFIX = local.rules_s3_prefix }) : { name = k, value = v }]
    })
  }
}

resource "aws_ecs_task_definition" "admin" {
  for_each                 = local.admin_containers
  family                   = "${var.name}-${each.key}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = 256
  memory                   = 512
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.admin.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([each.value])
}

locals {
  # `aws ecs run-task` for an admin task, in the private subnets with the workers' group
  # (the only one MSK admits).
  run_admin_task = {
    for key, task in aws_ecs_task_definition.admin : key => join(" ", [
      "aws ecs run-task",
      "--region ${local.region}",
      "--cluster ${aws_ecs_cluster.this.name}",
      "--launch-type FARGATE",
      "--task-definition ${task.family}",
      "--network-configuration 'awsvpcConfiguration={subnets=[${join(",", var.subnet_ids)}],securityGroups=[${var.security_group_id}],assignPublicIp=DISABLED}'",
    ])
  }
  # Where the installed app keeps its default rules in the image (python:3.11 slim).
  default_rules_path = "/usr/local/lib/python3.11/site-packages/app/rules_admin/default_rules.yaml"
}

# --- the first deployment: topics before workers ------------------------------------------
#
# A worker started before the topics exist cannot become healthy: its rules follower fails
# (no rules topic; /healthz fails after 30 s), its detection waits for the rules and dead
# letters are refused (no DLQ topic). Once the container health check's start period is
# over, ECS replaces such tasks, and the deployment circuit breaker marks the deployment
# FAILED after 3 of them (0.5 x desired count, at least 3). On a first deployment there is no
# completed deployment to roll back to: ECS then stops launching tasks altogether, and the
# service stays empty after the topics appear until someone forces a new deployment.
#
# So the apply itself runs the create-topics task (idempotent), waits for it to exit 0, and
# only then creates or updates the service (its depends_on). It runs again whenever that
# task definition changes (topic names, partitions, replication, image): a topic that exists
# with another partition count or cleanup policy fails the apply before any worker is
# replaced. The machine running `terraform apply` needs the AWS CLI v2 and sh.
resource "terraform_data" "topics" {
  triggers_replace = [aws_ecs_task_definition.admin["create-topics"].arn]
  input            = var.network_ready

  provisioner "local-exec" {
    command = "sh '${path.module}/run_admin_task.sh'"
    environment = {
      REGION          = local.region
      CLUSTER         = aws_ecs_cluster.this.name
      TASK_DEFINITION = aws_ecs_task_definition.admin["create-topics"].arn
      CONTAINER       = "create-topics"
      SUBNETS         = join(",", var.subnet_ids)
      SECURITY_GROUP  = var.security_group_id
      LOG_GROUP       = aws_cloudwatch_log_group.workers.name
    }
  }

  depends_on = [aws_iam_role_policy.admin, aws_iam_role_policy.execution]
}

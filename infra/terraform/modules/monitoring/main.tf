# What pages the on-call: alarms to their own SNS topic (not the alerts topic, whose
# subscribers expect fraud alerts as JSON), and one dashboard.
#
# Sink failures and the workers' other health signals are Prometheus metrics on each
# worker's /metrics, which nothing scrapes on Fargate without a collector sidecar. The same
# events are logged, one line each, so metric filters on the workers' log group turn them
# into CloudWatch metrics: no sidecar, no extra IAM, nothing to keep in sync but the log
# text (matched below and in the app's log calls).

data "aws_region" "current" {}

locals {
  region        = data.aws_region.current.name
  namespace     = "${var.name}/workers"
  alarm_actions = [aws_sns_topic.alarms.arn]
  broker_ids    = range(1, var.broker_count + 1)

  # Quoted phrases are ANDed; the texts are those of agents/sink.py, app/delivery/alert_writer.py
  # and app/worker/failures.py.
  log_metrics = {
    SinkFailures   = "\"dynamodb sink:\" \"alerts not written to\""
    InternalErrors = "\"the record went to the DLQ as internal_error\""
    AgentCrashes   = "\"Faust restarts it past the record it was on\""
  }

  # EstimatedMaxTimeLag (seconds behind) per consumer group and topic.
  lags = {
    detection = { group = var.app_id, topic = var.topics.payments, seconds = var.lag_alarm_seconds }
    sink      = { group = var.app_id, topic = var.topics.alerts, seconds = var.lag_alarm_seconds }
    # The archive commits only once a file is durable: up to a roll interval (300 s) behind is normal.
    archive = { group = "${var.app_id}-archive", topic = var.topics.payments, seconds = var.archive_lag_alarm_seconds }
  }
}

resource "aws_sns_topic" "alarms" {
  name              = "${var.name}-alarms"
  kms_master_key_id = var.kms_key_arn
}

resource "aws_sns_topic_subscription" "email" {
  count     = var.alarm_email == null ? 0 : 1
  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

# --- the workers: lag, dead letters, sink failures, crashes, running tasks ---------------

resource "aws_cloudwatch_log_metric_filter" "workers" {
  for_each       = local.log_metrics
  name           = "${var.name}-${each.key}"
  log_group_name = var.workers_log_group_name
  pattern        = each.value
  metric_transformation {
    name          = each.key
    namespace     = local.namespace
    value         = "1"
    default_value = "0"
  }
}

resource "aws_cloudwatch_metric_alarm" "lag" {
  for_each            = local.lags
  alarm_name          = "${var.name}-lag-${each.key}"
  alarm_description   = "Group ${each.value.group} is more than ${each.value.seconds} s behind on ${each.value.topic}."
  namespace           = "AWS/Kafka"
  metric_name         = "EstimatedMaxTimeLag"
  dimensions          = { "Cluster Name" = var.msk_cluster_name, "Consumer Group" = each.value.group, "Topic" = each.value.topic }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 5
  comparison_operator = "GreaterThanThreshold"
  threshold           = each.value.seconds
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

# Records arriving on the DLQ topic: MSK reports MessagesInPerSec per broker and topic
# (PER_TOPIC_PER_BROKER and above), so the alarm adds up every broker's figure.
resource "aws_cloudwatch_metric_alarm" "dlq_rate" {
  alarm_name          = "${var.name}-dlq-rate"
  alarm_description   = "More than ${var.dlq_alarm_per_second} records/s are dead-lettered to ${var.topics.dlq}."
  evaluation_periods  = 5
  datapoints_to_alarm = 5
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.dlq_alarm_per_second
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  dynamic "metric_query" {
    for_each = local.broker_ids
    content {
      id = "broker${metric_query.value}"
      metric {
        namespace   = "AWS/Kafka"
        metric_name = "MessagesInPerSec"
        dimensions  = { "Cluster Name" = var.msk_cluster_name, "Broker ID" = tostring(metric_query.value), "Topic" = var.topics.dlq }
        stat        = "Average"
        period      = 60
      }
    }
  }
  metric_query {
    id          = "dlq"
    expression  = join(" + ", [for id in local.broker_ids : "FILL(broker${id}, 0)"])
    label       = "records/s into ${var.topics.dlq}"
    return_data = true
  }
}

resource "aws_cloudwatch_metric_alarm" "sink_failures" {
  alarm_name          = "${var.name}-sink-failures"
  alarm_description   = "The DynamoDB sink has failed to write alerts for 3 minutes (it retries, and holds its offsets, until it succeeds)."
  namespace           = local.namespace
  metric_name         = "SinkFailures"
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  depends_on          = [aws_cloudwatch_log_metric_filter.workers]
}

resource "aws_cloudwatch_metric_alarm" "internal_errors" {
  alarm_name          = "${var.name}-internal-errors"
  alarm_description   = "A worker dead-lettered a record as internal_error or an agent crashed (a bug): read the workers' log."
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  depends_on          = [aws_cloudwatch_log_metric_filter.workers]

  metric_query {
    id = "errors"
    metric {
      namespace   = local.namespace
      metric_name = "InternalErrors"
      stat        = "Sum"
      period      = 300
    }
  }
  metric_query {
    id = "crashes"
    metric {
      namespace   = local.namespace
      metric_name = "AgentCrashes"
      stat        = "Sum"
      period      = 300
    }
  }
  metric_query {
    id          = "both"
    expression  = "FILL(errors, 0) + FILL(crashes, 0)"
    label       = "internal errors and agent crashes"
    return_data = true
  }
}

resource "aws_cloudwatch_metric_alarm" "no_worker" {
  alarm_name          = "${var.name}-no-worker-running"
  alarm_description   = "The workers' service has no running task: nothing is detecting."
  namespace           = "ECS/ContainerInsights"
  metric_name         = "RunningTaskCount"
  dimensions          = { ClusterName = var.ecs_cluster_name, ServiceName = var.service_name }
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

# The load balancer's own view of the workers' /healthz. ECS replaces a task that fails it
# (after 3 checks 30 s apart), so one unhealthy for 10 minutes in a row means tasks keep
# failing again after replacement: a crash loop, a stall that comes back, a bad deployment.
resource "aws_cloudwatch_metric_alarm" "unhealthy_workers" {
  alarm_name          = "${var.name}-workers-unhealthy"
  alarm_description   = "A worker has failed /healthz at the load balancer for 10 minutes: tasks are failing again after replacement."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "UnHealthyHostCount"
  dimensions          = { LoadBalancer = var.load_balancer_arn_suffix, TargetGroup = var.target_group_arn_suffix }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 10
  datapoints_to_alarm = 10
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

# --- the notifier -----------------------------------------------------------------------

locals {
  lambda_alarms = {
    errors    = { metric = "Errors", stat = "Sum", threshold = 0, description = "The notifier failed invocations (batches are retried, then go to the failure queue)." }
    throttles = { metric = "Throttles", stat = "Sum", threshold = 0, description = "The notifier was throttled: the account's Lambda concurrency is exhausted." }
    # Milliseconds: the newest record the function read was this old.
    iterator_age = { metric = "IteratorAge", stat = "Maximum", threshold = 60000, description = "The notifier is more than a minute behind the alerts stream." }
  }
}

resource "aws_cloudwatch_metric_alarm" "notifier" {
  for_each            = local.lambda_alarms
  alarm_name          = "${var.name}-notifier-${each.key}"
  alarm_description   = each.value.description
  namespace           = "AWS/Lambda"
  metric_name         = each.value.metric
  dimensions          = { FunctionName = var.notifier_function_name }
  statistic           = each.value.stat
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = each.value.threshold
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "undelivered_alerts" {
  alarm_name          = "${var.name}-undelivered-alerts"
  alarm_description   = "Alerts the notifier gave up on are waiting in ${var.failure_queue_name}: they are in DynamoDB but nobody was told."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = var.failure_queue_name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

# --- the brokers ------------------------------------------------------------------------

resource "aws_cloudwatch_metric_alarm" "msk_disk" {
  alarm_name          = "${var.name}-msk-disk"
  alarm_description   = "A broker's data volume is more than ${var.msk_disk_alarm_percent}% full."
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.msk_disk_alarm_percent
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  dynamic "metric_query" {
    for_each = local.broker_ids
    content {
      id = "broker${metric_query.value}"
      metric {
        namespace   = "AWS/Kafka"
        metric_name = "KafkaDataLogsDiskUsed"
        dimensions  = { "Cluster Name" = var.msk_cluster_name, "Broker ID" = tostring(metric_query.value) }
        stat        = "Maximum"
        period      = 300
      }
    }
  }
  metric_query {
    id          = "fullest"
    expression  = "MAX([${join(", ", [for id in local.broker_ids : "broker${id}"])}])"
    label       = "fullest broker, %"
    return_data = true
  }
}

# --- the dashboard ----------------------------------------------------------------------

locals {
  msk_search = "{AWS/Kafka,\"Broker ID\",\"Cluster Name\",Topic} \"Cluster Name\"=\"${var.msk_cluster_name}\" MetricName=\"MessagesInPerSec\""

  widgets = [
    {
      title = "Records in per second"
      metrics = [
        [{ expression = "SUM(SEARCH('${local.msk_search} Topic=\"${var.topics.payments}\"', 'Average', 60))", label = var.topics.payments, id = "payments" }],
        [{ expression = "SUM(SEARCH('${local.msk_search} Topic=\"${var.topics.alerts}\"', 'Average', 60))", label = var.topics.alerts, id = "alerts" }],
        [{ expression = "SUM(SEARCH('${local.msk_search} Topic=\"${var.topics.dlq}\"', 'Average', 60))", label = var.topics.dlq, id = "dlq" }],
      ]
    },
    {
      title = "Consumer lag, seconds (EstimatedMaxTimeLag)"
      metrics = [
        for key, lag in local.lags : ["AWS/Kafka", "EstimatedMaxTimeLag", "Cluster Name", var.msk_cluster_name, "Consumer Group", lag.group, "Topic", lag.topic, { label = key, stat = "Maximum" }]
      ]
    },
    {
      title = "Workers"
      metrics = [
        ["ECS/ContainerInsights", "RunningTaskCount", "ClusterName", var.ecs_cluster_name, "ServiceName", var.service_name, { stat = "Minimum", label = "running tasks" }],
        ["AWS/ApplicationELB", "HealthyHostCount", "TargetGroup", var.target_group_arn_suffix, "LoadBalancer", var.load_balancer_arn_suffix, { stat = "Minimum", label = "healthy at the load balancer" }],
        ["AWS/ECS", "CPUUtilization", "ClusterName", var.ecs_cluster_name, "ServiceName", var.service_name, { label = "CPU %", yAxis = "right" }],
        ["AWS/ECS", "MemoryUtilization", "ClusterName", var.ecs_cluster_name, "ServiceName", var.service_name, { label = "memory %", yAxis = "right" }],
      ]
    },
    {
      title = "Sink failures, internal errors, agent crashes (per minute)"
      metrics = [
        for metric in keys(local.log_metrics) : [local.namespace, metric, { stat = "Sum" }]
      ]
    },
    {
      title = "Notifier"
      metrics = [
        ["AWS/Lambda", "Invocations", "FunctionName", var.notifier_function_name, { stat = "Sum" }],
        ["AWS/Lambda", "Errors", "FunctionName", var.notifier_function_name, { stat = "Sum" }],
        ["AWS/Lambda", "Throttles", "FunctionName", var.notifier_function_name, { stat = "Sum" }],
        ["AWS/Lambda", "IteratorAge", "FunctionName", var.notifier_function_name, { stat = "Maximum", yAxis = "right" }],
        ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", var.failure_queue_name, { stat = "Maximum", label = "undelivered alerts" }],
      ]
    },
    {
      title = "Broker disk used, %"
      metrics = [
        for id in local.broker_ids : ["AWS/Kafka", "KafkaDataLogsDiskUsed", "Cluster Name", var.msk_cluster_name, "Broker ID", tostring(id), { stat = "Maximum" }]
      ]
    },
  ]
}

resource "aws_cloudwatch_dashboard" "this" {
  dashboard_name = var.name
  dashboard_body = jsonencode({
    widgets = concat(
      [
        {
          type   = "alarm"
          x      = 0
          y      = 0
          width  = 24
          height = 3
          properties = {
            title = "Alarms"
            alarms = concat(
              [for alarm in aws_cloudwatch_metric_alarm.lag : alarm.arn],
              [for alarm in aws_cloudwatch_metric_alarm.notifier : alarm.arn],
              [
                aws_cloudwatch_metric_alarm.dlq_rate.arn,
                aws_cloudwatch_metric_alarm.sink_failures.arn,
                aws_cloudwatch_metric_alarm.internal_errors.arn,
                aws_cloudwatch_metric_alarm.no_worker.arn,
                aws_cloudwatch_metric_alarm.unhealthy_workers.arn,
                aws_cloudwatch_metric_alarm.undelivered_alerts.arn,
                aws_cloudwatch_metric_alarm.msk_disk.arn,
              ],
            )
          }
        },
      ],
      [
        for index, widget in local.widgets : {
          type   = "metric"
          x      = (index % 2) * 12
          y      = 3 + floor(index / 2) * 6
          width  = 12
          height = 6
          properties = {
            title   = widget.title
            region  = local.region
            view    = "timeSeries"
            stacked = false
            period  = 60
            metrics = widget.metrics
          }
        }
      ],
    )
  })
}

# Amazon MSK: TLS between clients and brokers and among brokers, IAM authentication,
# storage encrypted with the stack's key, broker logs in CloudWatch.
#
# Authentication: IAM (SASL/OAUTHBEARER signed with the ECS task role), not SASL/SCRAM.
# IAM needs no password to create, store, inject or rotate, and the per-topic and per-group
# authorisation is IAM policy on this cluster's topic and group ARNs (modules/workers),
# reviewed like every other permission; with SCRAM it would be Kafka ACLs, which Terraform's
# AWS provider cannot manage. The worker signs tokens with aws-msk-iam-sasl-signer-python
# (FRAUD_KAFKA_SASL_MECHANISM=AWS_MSK_IAM).
#
# Topics: the AWS provider cannot create Kafka topics, and auto-creation is off (below),
# so a topic is never born with the broker's default partition count by a typo or a race.
# A one-shot ECS task (modules/workers, output `create_topics_command`) creates payments.raw,
# fraud.alerts and payments.dlq with var.partitions partitions and fraud.rules compacted
# with one partition, before the workers start. The workers create their own internal
# topics (changelogs, the repartition topic) through Faust, with the same partition count.

resource "aws_cloudwatch_log_group" "brokers" {
  name              = "/${var.name}/msk-brokers"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

resource "aws_msk_configuration" "this" {
  name           = "${var.name}-kafka"
  kafka_versions = [var.kafka_version]
  server_properties = join("\n", [
    # Topics exist because the create-topics task made them, never by accident.
    "auto.create.topics.enable=false",
    "default.replication.factor=${var.replication_factor}",
    # acks=all (the workers' producer) then survives one broker down.
    "min.insync.replicas=${max(1, var.replication_factor - 1)}",
    "unclean.leader.election.enable=false",
    # payments.raw, fraud.alerts, payments.dlq and the repartition topic; the changelogs and
    # fraud.rules carry their own retention. History is the Parquet archive's job.
    "log.retention.hours=${var.retention_hours}",
    # The workers' 6 s session timeout is the broker's default minimum; keep it so.
    "group.min.session.timeout.ms=6000",
  ])
}

resource "aws_msk_cluster" "this" {
  cluster_name           = var.name
  kafka_version          = var.kafka_version
  number_of_broker_nodes = length(var.subnet_ids) * var.brokers_per_az
  # PER_TOPIC_PER_PARTITION: per-topic MessagesInPerSec (the DLQ alarm) and the per-group
  # lag metrics (SumOffsetLag, EstimatedMaxTimeLag) that scale the workers.
  enhanced_monitoring = var.enhanced_monitoring

  broker_node_group_info {
    instance_type   = var.instance_type
    client_subnets  = var.subnet_ids
    security_groups = [var.security_group_id]

    storage_info {
      ebs_storage_info {
        volume_size = var.volume_size_gib
      }
    }

    connectivity_info {
      public_access {
        type = "DISABLED"
      }
    }
  }

  configuration_info {
    arn      = aws_msk_configuration.this.arn
    revision = aws_msk_configuration.this.latest_revision
  }

  encryption_info {
    encryption_at_rest_kms_key_arn = var.kms_key_arn
    encryption_in_transit {
      client_broker = "TLS"
      in_cluster    = true
    }
  }

  client_authentication {
    unauthenticated = false
    sasl {
      iam   = true
      scram = false
    }
  }

  logging_info {
    broker_logs {
      cloudwatch_logs {
        enabled   = true
        log_group = aws_cloudwatch_log_group.brokers.name
      }
    }
  }
}

# A VPC with private subnets only: MSK's brokers and the Fargate workers live here and
# nothing in it has a route to the internet.
#
# NAT or VPC endpoints? Endpoints. The workers talk to AWS services only (MSK in the VPC,
# DynamoDB, S3, ECR, CloudWatch Logs; MSK IAM tokens are signed locally from the task
# role's credentials), so they need no internet at all, and without a NAT a compromised
# worker cannot send payments to an arbitrary host. The gateway endpoints (S3, DynamoDB)
# are free and carry the heavy traffic (archive uploads, alert writes) without NAT's
# per-GB charge, and their policies below admit only this stack's bucket and table. The
# interface endpoints (ECR, Logs, optionally Secrets Manager) cost about what one NAT
# gateway per AZ would. The notifier Lambda, which must reach Slack, runs outside the VPC.

data "aws_region" "current" {}

# The zones are named, not "the first N the region lists": a zone AWS adds later must not
# shift the subnets (and so the brokers) to other zones. The data source only proves the
# named zones exist and are available.
data "aws_availability_zones" "named" {
  state = "available"
  filter {
    name   = "zone-name"
    values = var.availability_zones
  }

  lifecycle {
    postcondition {
      condition     = length(self.names) == length(var.availability_zones)
      error_message = "Not every zone of availability_zones exists and is available in this region."
    }
  }
}

locals {
  region   = data.aws_region.current.name
  azs      = var.availability_zones
  az_count = length(var.availability_zones)
}

resource "aws_vpc" "this" {
  cidr_block           = var.cidr
  enable_dns_support   = true # MSK broker names and the endpoints' private DNS
  enable_dns_hostnames = true
  tags = {
    Name = var.name
  }
}

resource "aws_subnet" "private" {
  count                   = local.az_count
  vpc_id                  = aws_vpc.this.id
  availability_zone       = local.azs[count.index]
  cidr_block              = cidrsubnet(var.cidr, 4, count.index)
  map_public_ip_on_launch = false
  tags = {
    Name = "${var.name}-private-${local.azs[count.index]}"
  }
}

# No route but the VPC's own (and the gateway endpoints' prefix lists, added by AWS).
resource "aws_route_table" "private" {
  vpc_id = aws_vpc.this.id
  tags = {
    Name = "${var.name}-private"
  }
}

resource "aws_route_table_association" "private" {
  count          = local.az_count
  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private.id
}

# The VPC's default security group admits nothing: every ENI here names its own group.
resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id
}

# --- security groups: only the workers reach MSK and the endpoints ---------------------

# CKV2_AWS_5 below: the workers' group is attached in modules/workers (service and admin
# task) and the brokers' in modules/kafka; checkov's graph does not follow module outputs.
# Its description predates the web port (each other, and the load balancer of modules/web):
# a security group's description cannot change without replacing the group.
resource "aws_security_group" "workers" {
  #checkov:skip=CKV2_AWS_5:Attached to the ECS service and the admin task in modules/workers, through this module's output.
  name        = "${var.name}-workers"
  description = "Fargate workers: no inbound; out to MSK, the VPC endpoints, S3 and DynamoDB"
  vpc_id      = aws_vpc.this.id
}

resource "aws_security_group" "msk" {
  #checkov:skip=CKV2_AWS_5:Attached to the MSK brokers in modules/kafka, through this module's output.
  name        = "${var.name}-msk"
  description = "MSK brokers: the IAM-auth TLS listener, from the workers only"
  vpc_id      = aws_vpc.this.id
}

resource "aws_security_group" "endpoints" {
  name        = "${var.name}-endpoints"
  description = "Interface VPC endpoints: HTTPS from the workers only"
  vpc_id      = aws_vpc.this.id
}

resource "aws_vpc_security_group_ingress_rule" "msk_from_workers" {
  security_group_id            = aws_security_group.msk.id
  description                  = "Kafka over TLS with IAM auth, from the workers"
  ip_protocol                  = "tcp"
  from_port                    = var.kafka_port
  to_port                      = var.kafka_port
  referenced_security_group_id = aws_security_group.workers.id
}

resource "aws_vpc_security_group_egress_rule" "workers_to_msk" {
  security_group_id            = aws_security_group.workers.id
  description                  = "Kafka over TLS with IAM auth, to the brokers"
  ip_protocol                  = "tcp"
  from_port                    = var.kafka_port
  to_port                      = var.kafka_port
  referenced_security_group_id = aws_security_group.msk.id
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_from_workers" {
  security_group_id            = aws_security_group.endpoints.id
  description                  = "HTTPS to the interface endpoints, from the workers"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.workers.id
}

resource "aws_vpc_security_group_egress_rule" "workers_to_endpoints" {
  security_group_id            = aws_security_group.workers.id
  description                  = "HTTPS to the interface endpoints (ECR, Logs, Secrets Manager)"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.endpoints.id
}

resource "aws_vpc_security_group_egress_rule" "workers_to_gateways" {
  for_each          = aws_vpc_endpoint.gateway
  security_group_id = aws_security_group.workers.id
  description       = "HTTPS to ${each.key} through its gateway endpoint"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_id    = each.value.prefix_list_id
}

# A card lookup asked of one worker is forwarded to the worker that holds the card's
# partition, at its task address (modules/web admits the load balancer on the same port).
resource "aws_vpc_security_group_ingress_rule" "workers_web_from_workers" {
  security_group_id            = aws_security_group.workers.id
  description                  = "Card lookups forwarded by another worker, on the web port"
  ip_protocol                  = "tcp"
  from_port                    = var.web_port
  to_port                      = var.web_port
  referenced_security_group_id = aws_security_group.workers.id
}

resource "aws_vpc_security_group_egress_rule" "workers_web_to_workers" {
  security_group_id            = aws_security_group.workers.id
  description                  = "Card lookups forwarded to the worker that holds the card"
  ip_protocol                  = "tcp"
  from_port                    = var.web_port
  to_port                      = var.web_port
  referenced_security_group_id = aws_security_group.workers.id
}

# --- VPC endpoints -----------------------------------------------------------------------

# Endpoint policies apply to every principal that uses the endpoint, so they name the
# principal "*" (what AWS expects there) and restrict the resources instead: a worker
# cannot write to any other bucket or table through them, even with stolen credentials.
data "aws_iam_policy_document" "s3_endpoint" {
  statement {
    sid = "ThisStacksArchiveBucket"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:ListBucket",
      "s3:ListBucketMultipartUploads",
      "s3:ListMultipartUploadParts",
      "s3:AbortMultipartUpload",
    ]
    resources = [
      var.archive_bucket_arn,
      "${var.archive_bucket_arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
  }
  # ECR keeps image layers in an AWS-owned bucket per region; Fargate pulls them via S3.
  statement {
    sid       = "EcrImageLayers"
    actions   = ["s3:GetObject"]
    resources = ["arn:aws:s3:::prod-${local.region}-starport-layer-bucket/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
  }
}

data "aws_iam_policy_document" "dynamodb_endpoint" {
  statement {
    sid       = "ThisStacksAlertsTable"
    actions   = ["dynamodb:PutItem", "dynamodb:DescribeTable"]
    resources = [var.alerts_table_arn]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
  }
}

locals {
  gateway_policies = {
    s3       = data.aws_iam_policy_document.s3_endpoint.json
    dynamodb = data.aws_iam_policy_document.dynamodb_endpoint.json
  }
}

resource "aws_vpc_endpoint" "gateway" {
  for_each          = local.gateway_policies
  vpc_id            = aws_vpc.this.id
  vpc_endpoint_type = "Gateway"
  service_name      = "com.amazonaws.${local.region}.${each.key}"
  route_table_ids   = [aws_route_table.private.id]
  policy            = each.value
  tags = {
    Name = "${var.name}-${each.key}"
  }
}

resource "aws_vpc_endpoint" "interface" {
  for_each            = toset(var.interface_endpoints)
  vpc_id              = aws_vpc.this.id
  vpc_endpoint_type   = "Interface"
  service_name        = "com.amazonaws.${local.region}.${each.value}"
  subnet_ids          = aws_subnet.private[*].id
  security_group_ids  = [aws_security_group.endpoints.id]
  private_dns_enabled = true
  tags = {
    Name = "${var.name}-${each.value}"
  }
}

# --- flow logs ---------------------------------------------------------------------------

resource "aws_cloudwatch_log_group" "flow_logs" {
  name              = "/${var.name}/vpc-flow-logs"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

data "aws_iam_policy_document" "flow_logs_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }
    # Only flow logs of this account may assume the role (confused-deputy guard).
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [aws_vpc.this.owner_id]
    }
  }
}

resource "aws_iam_role" "flow_logs" {
  name               = "${var.name}-vpc-flow-logs"
  assume_role_policy = data.aws_iam_policy_document.flow_logs_assume.json
}

data "aws_iam_policy_document" "flow_logs" {
  # The group exists (above), so no logs:CreateLogGroup; ":*" is every stream of this group.
  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.flow_logs.arn}:*"]
  }
}

resource "aws_iam_role_policy" "flow_logs" {
  name   = "write-flow-logs"
  role   = aws_iam_role.flow_logs.id
  policy = data.aws_iam_policy_document.flow_logs.json
}

resource "aws_flow_log" "this" {
  vpc_id                   = aws_vpc.this.id
  traffic_type             = "ALL"
  log_destination_type     = "cloud-watch-logs"
  log_destination          = aws_cloudwatch_log_group.flow_logs.arn
  iam_role_arn             = aws_iam_role.flow_logs.arn
  max_aggregation_interval = 600
}

# The workers' web endpoints (the dashboard, /cards, /alerts, /stats, /rules, /healthz,
# /readyz, /metrics) on an internal Application Load Balancer in the private subnets.
#
# Reaching it: internal means a private address only, in the VPC, which has no route to the
# internet. An operator comes in from a network joined to the VPC (VPN, Direct Connect, a
# peered or Transit Gateway network) whose CIDRs are var.allowed_cidrs, the only sources
# its security group admits (default: the VPC's own CIDR). The stack creates no bastion
# and no Session Manager endpoints, and ECS Exec stays off on the workers (a shell in a
# task that holds card state and an MSK identity is not an inspection tool).
#
# What a request reaches: any worker (cookie stickiness keeps a browser's dashboard on one).
# /cards/{card_id} is forwarded by that worker to the partition's owner at its advertised
# address (FRAUD_WEB_HOST, the task's own IP: infra/terraform/worker_entry.py); /rules is
# the same on every worker; /alerts, /stats and /metrics are the answering worker's own.
# Rule writes, backtests and shadow evidence need FRAUD_API_TOKEN (api_token_secret_arn):
# give the listener a certificate (var.certificate_arn) before you send that token.

locals {
  https         = var.certificate_arn != null
  listener_port = local.https ? 443 : 80
}

resource "aws_security_group" "alb" {
  name        = "${var.name}-web"
  description = "Internal load balancer of the workers' web endpoints: from the allowed CIDRs only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "alb_from_allowed" {
  for_each          = toset(var.allowed_cidrs)
  security_group_id = aws_security_group.alb.id
  description       = "The web endpoints from ${each.value}"
  ip_protocol       = "tcp"
  from_port         = local.listener_port
  to_port           = local.listener_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "alb_to_workers" {
  security_group_id            = aws_security_group.alb.id
  description                  = "Requests and health checks to the workers' web port"
  ip_protocol                  = "tcp"
  from_port                    = var.web_port
  to_port                      = var.web_port
  referenced_security_group_id = var.workers_security_group_id
}

resource "aws_vpc_security_group_ingress_rule" "workers_from_alb" {
  security_group_id            = var.workers_security_group_id
  description                  = "The web port, from the internal load balancer"
  ip_protocol                  = "tcp"
  from_port                    = var.web_port
  to_port                      = var.web_port
  referenced_security_group_id = aws_security_group.alb.id
}

resource "aws_lb" "web" {
  #checkov:skip=CKV_AWS_91:Access logs need a bucket with S3-managed keys (ALB cannot write SSE-KMS), a second unencrypted-by-our-key store of card ids in URLs; VPC flow logs record every connection, and rule writes are recorded on the rules topic itself.
  #checkov:skip=CKV2_AWS_20:Its HTTP listener exists only without var.certificate_arn, when there is no HTTPS listener to redirect to; with a certificate there is no HTTP listener at all.
  #checkov:skip=CKV2_AWS_28:Internal load balancer with no route from the internet, admitting only var.allowed_cidrs: a WAF web ACL would guard against nothing that reaches it.
  name                       = "${var.name}-web"
  internal                   = true
  load_balancer_type         = "application"
  subnets                    = var.subnet_ids
  security_groups            = [aws_security_group.alb.id]
  drop_invalid_header_fields = true
  enable_deletion_protection = var.deletion_protection
  # A backtest over HTTP (POST /rules/{id}/backtest) answers when it is done.
  idle_timeout = 300
}

resource "aws_lb_target_group" "workers" {
  #checkov:skip=CKV_AWS_378:TLS ends at the load balancer; the worker's Faust web server speaks plain HTTP, and the hop stays in the private subnets between two security groups that admit only each other.
  name                 = "${var.name}-workers"
  target_type          = "ip" # awsvpc: each task is a target at its own address
  port                 = var.web_port
  protocol             = "HTTP"
  vpc_id               = var.vpc_id
  deregistration_delay = 30

  # Liveness, like the container's own check: /readyz would take a worker out (and ECS
  # replace it) while it merely recovers its tables. ECS ignores it for the service's
  # health_check_grace_period_seconds after a task starts.
  health_check {
    path                = "/healthz"
    matcher             = "200"
    interval            = 30
    timeout             = 10
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  # /alerts, /stats and the dashboard's feed are the answering worker's own.
  stickiness {
    type            = "lb_cookie"
    enabled         = true
    cookie_duration = 3600
  }
}

resource "aws_lb_listener" "https" {
  count             = local.https ? 1 : 0
  load_balancer_arn = aws_lb.web.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = var.ssl_policy
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.workers.arn
  }
}

resource "aws_lb_listener" "http" {
  #checkov:skip=CKV_AWS_2:Created only without var.certificate_arn, for a load balancer reached from var.allowed_cidrs alone; the docs and a plan-time warning say to add a certificate before sending the API token.
  #checkov:skip=CKV_AWS_103:Plain HTTP has no TLS version to set; with var.certificate_arn the HTTPS listener takes its place with a TLS 1.2+ policy.
  count             = local.https ? 0 : 1
  load_balancer_arn = aws_lb.web.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.workers.arn
  }
}

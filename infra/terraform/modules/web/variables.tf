variable "name" {
  description = "Prefix of every resource name (the load balancer is <name>-web)."
  type        = string
}

variable "vpc_id" {
  description = "The VPC of the workers."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the load balancer (those of the workers, two zones at least)."
  type        = list(string)
}

variable "workers_security_group_id" {
  description = "The workers' security group: it admits the web port from the load balancer."
  type        = string
}

variable "web_port" {
  description = "The workers' web port (FRAUD_WEB_PORT)."
  type        = number
}

variable "allowed_cidrs" {
  description = "IPv4 CIDRs admitted to the listener (the VPC's own, VPN or Direct Connect ranges)."
  type        = list(string)
}

variable "certificate_arn" {
  description = "ACM certificate of an HTTPS listener on 443; null: plain HTTP on 80."
  type        = string
  default     = null
}

variable "ssl_policy" {
  description = "TLS policy of the HTTPS listener."
  type        = string
  default     = "ELBSecurityPolicy-TLS13-1-2-2021-06"
}

variable "deletion_protection" {
  description = "Refuse to delete the load balancer (turn off before a deliberate destroy)."
  type        = bool
}

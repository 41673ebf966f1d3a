variable "name" {
  description = "Prefix of every resource name."
  type        = string
}

variable "cidr" {
  description = "The VPC's CIDR block; each private subnet takes a /20-equivalent slice (cidrsubnet newbits 4)."
  type        = string
}

variable "availability_zones" {
  description = "Names of the availability zones, one private subnet each (MSK needs 2 or 3)."
  type        = list(string)
}

variable "kafka_port" {
  description = "The MSK listener the workers use (9098: TLS with IAM auth)."
  type        = number
  default     = 9098
}

variable "web_port" {
  description = "The workers' web port: they forward card lookups to each other on it."
  type        = number
}

variable "interface_endpoints" {
  description = "Interface VPC endpoints to create (service names after com.amazonaws.<region>.)."
  type        = list(string)
}

variable "archive_bucket_arn" {
  description = "The archive bucket: the only bucket (besides ECR's layers) the S3 endpoint admits."
  type        = string
}

variable "alerts_table_arn" {
  description = "The alerts table: the only table the DynamoDB endpoint admits."
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key encrypting the flow-log group."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the flow-log group, in days."
  type        = number
}

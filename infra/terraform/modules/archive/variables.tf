variable "name" {
  description = "Prefix of the bucket name (<name>-archive-<account>-<region>)."
  type        = string
}

variable "prefix" {
  description = "Key prefix of the archive inside the bucket (no leading or trailing slash)."
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key of the bucket's default encryption."
  type        = string
}

variable "ia_days" {
  description = "Days after which archive files move to STANDARD_IA."
  type        = number
}

variable "glacier_ir_days" {
  description = "Days after which archive files move to GLACIER_IR."
  type        = number
}

variable "noncurrent_days" {
  description = "Days a replaced or deleted archive file's old version is kept."
  type        = number
}

variable "expiration_days" {
  description = "Days after which archive files are deleted; null keeps them forever."
  type        = number
  default     = null
}

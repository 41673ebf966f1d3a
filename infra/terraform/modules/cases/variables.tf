variable "table_name" {
  description = "Name of the cases table (the workers' FRAUD_CASES_TABLE)."
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key encrypting the table."
  type        = string
}

variable "deletion_protection" {
  description = "Refuse to delete the table (turn off before a deliberate destroy)."
  type        = bool
}

terraform {
  # 1.9: a variable's validation may refer to other variables (desired_count <= partitions).
  required_version = ">= 1.9"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.40"
    }
  }
}

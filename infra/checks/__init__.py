"""Static checks of the infrastructure files (Terraform, Dockerfile, compose), run by
tests/infra."""

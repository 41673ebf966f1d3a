"""Python beside the Terraform: ``topics.py``, the one-shot task that creates the Kafka topics
(``python -m infra.terraform.topics`` in the worker image). Terraform ignores this file."""

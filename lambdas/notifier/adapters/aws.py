"""boto3 clients with bounded timeouts, usable against DynamoDB Local and moto."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

# Bounded AWS calls: botocore's defaults (60 s read timeout) could outlive an invocation.
BOTO_CONFIG = Config(
    connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 3}
)


def aws_client(service: str, region: str, endpoint: str | None = None) -> Any:
    """A boto3 client; with a local ``endpoint`` it works without AWS credentials.

    Without ``endpoint`` boto3's own resolution applies, including the
    ``AWS_ENDPOINT_URL_<SERVICE>`` variables (how the tests point SNS at moto).
    """
    session = boto3.session.Session(region_name=region)
    kwargs: dict[str, Any] = {"config": BOTO_CONFIG}
    if endpoint:
        kwargs["endpoint_url"] = endpoint
        if session.get_credentials() is None:
            # DynamoDB Local and moto accept any key; a laptop often has none configured.
            kwargs["aws_access_key_id"] = "local"
            kwargs["aws_secret_access_key"] = "local"
    return session.client(service, **kwargs)

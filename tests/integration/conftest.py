"""One local stack (real Kafka; DynamoDB Local where a test asks) per test session."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from app.detection.rules import SEED_RULE
from infra.local.stack import LocalStack
from tests.integration.harness import Pipeline


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """A moto server on loopback (SNS, and DynamoDB for the notifier's idempotency table)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    with LocalStack(kafka=True, dynamodb=True, partitions=4) as running:
        yield running


@pytest.fixture
def pipeline(stack: LocalStack, tmp_path: Path) -> Iterator[Pipeline]:
    deployment = Pipeline(stack, tmp_path)
    deployment.create_topics()
    deployment.put_rules([SEED_RULE])
    yield deployment

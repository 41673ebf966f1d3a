"""One local stack (real Kafka; DynamoDB Local where a test asks) per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.detection.rules import SEED_RULE
from infra.local.stack import LocalStack
from tests.integration.harness import Pipeline


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

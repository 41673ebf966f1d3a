"""The sizing table (bench.sizing) as the README and the scaling page show it, and the
Terraform defaults and example variables that deploy its 100 000 payments/s row.

When a new measurement changes an input (bench.sizing.Inputs), ``python -m bench.sizing``
prints the table and the arithmetic to paste, and these tests name what else must follow.
"""

from __future__ import annotations

import math
from typing import Any

import hcl2
import pytest

from bench.sizing import BROKER_TYPES, VOLUME_MAX_GIB, Inputs, Plan, arithmetic, plan, table
from tests.docs import REPO, page

TERRAFORM = REPO / "infra" / "terraform"
_OPTIONS = hcl2.SerializationOptions(with_comments=False, preserve_heredocs=False)
RATES = (100_000, 1_000_000)


def unquote(value: Any) -> Any:
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def variable_defaults() -> dict[str, Any]:
    parsed = hcl2.loads((TERRAFORM / "variables.tf").read_text(), serialization_options=_OPTIONS)
    return {
        unquote(name): unquote(body.get("default"))
        for block in parsed["variable"]
        for name, body in block.items()
        if not name.startswith("__")
    }


def example() -> dict[str, Any]:
    text = (TERRAFORM / "terraform.tfvars.example").read_text()
    parsed = hcl2.loads(text, serialization_options=_OPTIONS)
    return {k: unquote(v) for k, v in parsed.items() if not k.startswith("__")}


def settings_of(row: Plan) -> dict[str, Any]:
    """The Terraform variables that deploy a row of the table."""
    return {
        "kafka_instance_type": row.broker.name,
        "kafka_brokers_per_az": row.brokers // row.inputs.zones,
        "kafka_volume_size_gib": row.volume_gib,
        "kafka_retention_hours": row.inputs.retention_hours,
        "topic_replication": row.inputs.replication,
        "partitions": row.partitions,
        "desired_count": row.workers,
        "worker_cpu": 1024 * row.vcpus_per_worker,  # the worker and its archive's process
        "lag_scale_out_threshold": row.scale_out_lag,
        "lag_scale_in_threshold": row.scale_in_lag,
    }


@pytest.fixture(scope="module")
def plans() -> list[Plan]:
    return [plan(rate) for rate in RATES]


def test_the_readme_shows_the_table_and_its_inputs(plans: list[Plan]) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    inputs = Inputs()
    assert table(plans) in readme
    words = " ".join(readme.split())  # the inputs are prose: lines break anywhere
    for stated in (
        f"{inputs.per_worker:,} payments/s".replace(",", " "),
        f"{inputs.cpu_per_100k} CPU-s per 100 000",
        f"{inputs.headroom:g} times",
        f"{inputs.payment_bytes} B",
        f"{inputs.retention_hours} h",
    ):
        assert stated in words, stated


def test_the_scaling_page_shows_the_table_and_the_arithmetic(plans: list[Plan]) -> None:
    scaling = page("operations/scaling.md")
    assert table(plans) in scaling
    for row in plans:
        assert arithmetic(row) in scaling


def test_the_terraform_defaults_deploy_the_100k_row(plans: list[Plan]) -> None:
    defaults = variable_defaults()
    wanted = settings_of(plans[0])
    assert {name: defaults[name] for name in wanted} == wanted
    assert len(defaults["availability_zone_letters"]) == plans[0].inputs.zones
    assert defaults["max_count"] is None  # the partition count: room to double


def test_the_tfvars_example_sets_the_100k_row_and_names_the_1m_row(plans: list[Plan]) -> None:
    found = example()
    wanted = settings_of(plans[0])
    assert {name: found[name] for name in wanted} == wanted
    comments = (TERRAFORM / "terraform.tfvars.example").read_text()
    for name, value in settings_of(plans[1]).items():
        if value != wanted[name]:
            shown = f'"{value}"' if isinstance(value, str) else str(value)
            assert f"{name} = {shown}" in comments, name


@pytest.mark.parametrize("rate", [10_000, *RATES, 3_000_000])
def test_each_row_keeps_its_own_rules(rate: int) -> None:
    row = plan(rate)
    inputs = row.inputs
    planned = rate * inputs.headroom
    # Partitions: a multiple of 12, at least twice the workers, at most one worker each.
    least = math.ceil(planned / inputs.per_worker)
    assert row.partitions % 12 == 0 and row.partitions >= 2 * least
    assert row.workers <= row.partitions
    # The busiest worker stays within the measured rate, and one fewer would not.
    assert math.ceil(row.partitions / row.workers) * planned / row.partitions <= inputs.per_worker
    fewer = row.workers - 1
    assert fewer == 0 or (
        math.ceil(row.partitions / fewer) * planned / row.partitions > inputs.per_worker
    )
    # Each broker within every limit, a whole number of them in each zone.
    load = row.per_broker
    assert row.brokers % inputs.zones == 0 and row.brokers >= inputs.zones
    assert load["storage_mb_s"] <= load["storage_limit_mb_s"]
    assert load["network_out_mb_s"] <= load["network_limit_mb_s"]
    assert load["partitions"] <= load["partitions_limit"]
    assert row.per_broker["retained_gib"] <= row.volume_gib <= VOLUME_MAX_GIB


def test_a_slower_worker_needs_more_workers_and_more_traffic_more_brokers() -> None:
    base = plan(100_000)
    assert plan(100_000, Inputs(per_worker=18_000)).workers > base.workers
    bigger = plan(100_000, Inputs(payment_bytes=2_000))
    assert (bigger.brokers, BROKER_TYPES.index(bigger.broker)) > (
        base.brokers,
        BROKER_TYPES.index(base.broker),
    )

"""infra/terraform/put_rules.py: the one-shot task that publishes a rule file from S3."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.terraform.put_rules import RulesFileError, local_path, main, object_location

PREFIX = "s3://fraud-archive-123456789012-eu-west-1/rules/"
BUCKET = "fraud-archive-123456789012-eu-west-1"


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("gb-pair.yaml", "rules/gb-pair.yaml"),
        ("/gb-pair.yaml", "rules/gb-pair.yaml"),
        ("team/gb-pair.json", "rules/team/gb-pair.json"),
        (f"{PREFIX}gb-pair.yaml", "rules/gb-pair.yaml"),
    ],
)
def test_a_file_is_found_under_the_rules_prefix(name: str, key: str) -> None:
    assert object_location(PREFIX, name) == (BUCKET, key)
    assert object_location(PREFIX.rstrip("/"), name) == (BUCKET, key)


@pytest.mark.parametrize(
    "name",
    [
        "s3://another-bucket/rules/gb-pair.yaml",
        f"s3://{BUCKET}/archive/payments/part-0.parquet",
        f"s3://{BUCKET}/rules-old/gb-pair.yaml",
        PREFIX,
        "team/",
        "../archive/x.parquet",
        "team/../../archive/x.parquet",
        "a//b.yaml",
    ],
)
def test_anything_outside_the_rules_prefix_is_refused(name: str) -> None:
    with pytest.raises(RulesFileError):
        object_location(PREFIX, name)


def test_the_file_is_downloaded_to_tmp_under_its_own_name() -> None:
    assert local_path("rules/team/gb-pair.json") == "/tmp/rules/gb-pair.json"


def test_a_downloaded_file_is_handed_to_rules_put() -> None:
    downloads: list[tuple[str, str, str]] = []
    puts: list[str] = []

    def download(bucket: str, key: str, path: str) -> None:
        downloads.append((bucket, key, path))

    def put(path: str) -> int:
        puts.append(path)
        return 1  # e.g. `rules put` refused the rule: its status is the task's

    env = {"RULES_S3_PREFIX": PREFIX, "RULES_FILE": "gb-pair.yaml"}
    assert main(env, download, put) == 1
    assert downloads == [(BUCKET, "rules/gb-pair.yaml", "/tmp/rules/gb-pair.yaml")]
    assert puts == ["/tmp/rules/gb-pair.yaml"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RULES_FILE": "gb-pair.yaml"}, "RULES_S3_PREFIX is not set"),
        ({"RULES_S3_PREFIX": PREFIX}, f"set RULES_FILE to a file under {PREFIX}"),
        (
            {"RULES_S3_PREFIX": PREFIX, "RULES_FILE": "s3://other/rules/x.yaml"},
            "is not a file under",
        ),
        ({"RULES_S3_PREFIX": PREFIX, "RULES_FILE": "missing.yaml"}, "cannot download s3://"),
    ],
)
def test_each_mistake_exits_2_naming_it(
    env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def download(bucket: str, key: str, path: str) -> None:
        raise PermissionError("An error occurred (403) when calling the HeadObject operation")

    def put(path: str) -> int:
        raise AssertionError("nothing may be published")

    assert main(env, download, put) == 2
    assert message in capsys.readouterr().err


def test_the_script_runs_as_program_text_the_way_the_ecs_task_runs_it() -> None:
    # The put-rules task runs put_rules.py's source with `python -c` (the worker image holds
    # the installed app, not infra/). Without RULES_FILE it stops before S3.
    source = (Path(__file__).resolve().parents[2] / "infra/terraform/put_rules.py").read_text()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RULES_")}
    done = subprocess.run(
        [sys.executable, "-c", source],
        env={**environment, "RULES_S3_PREFIX": PREFIX},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "set RULES_FILE" in done.stderr

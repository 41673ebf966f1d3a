"""docs/operations/runbook.md has a section for every CloudWatch alarm infra/terraform defines,
by its name, and none for an alarm that no longer exists."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import hcl2

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "infra" / "terraform"
RUNBOOK = REPO / "docs" / "operations" / "runbook.md"
DEPLOY = REPO / "docs" / "how-to" / "deploy-aws.md"
# The runbook names alarms as a stack named with the default `name` has them.
NAME = "fraud"
_OPTIONS = hcl2.SerializationOptions(with_comments=False, preserve_heredocs=False)


def unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def alarm_names() -> dict[str, str]:
    """Every aws_cloudwatch_metric_alarm's name (for_each keys expanded) -> its file."""
    names: dict[str, str] = {}
    for path in sorted(TERRAFORM.rglob("*.tf")):
        parsed: dict[str, Any] = hcl2.loads(path.read_text(), serialization_options=_OPTIONS)
        local_values = {k: v for block in parsed.get("locals", []) for k, v in block.items()}
        for block in parsed.get("resource", []):
            for alarm in block.get('"aws_cloudwatch_metric_alarm"', {}).values():
                if not isinstance(alarm, dict):
                    continue
                template = unquote(alarm["alarm_name"]).replace("${var.name}", NAME)
                keys = [""]
                if "${each.key}" in template:
                    local = re.fullmatch(r"\$\{local\.(\w+)\}", alarm["for_each"])
                    assert local, f"{path.name}: for_each of {template} is not a local"
                    keys = list(local_values[local[1]])
                for key in keys:
                    name = template.replace("${each.key}", key)
                    assert "${" not in name, f"{path.name}: cannot name the alarm {name}"
                    names[name] = str(path.relative_to(TERRAFORM))
    return names


def runbook_sections(text: str) -> list[str]:
    """The alarm names that head a level-2 section: ## `fraud-...`."""
    return re.findall(r"^## `([a-z0-9_-]+)`", text, re.MULTILINE)


def unmatched(text: str) -> tuple[list[str], list[str]]:
    """(alarms without a section, sections without an alarm) of a runbook's text."""
    sections, alarms = set(runbook_sections(text)), set(alarm_names())
    return sorted(alarms - sections), sorted(sections - alarms)


def test_the_alarms_are_found() -> None:
    names = alarm_names()
    assert {"fraud-lag-detection", "fraud-notifier-iterator_age", "fraud-msk-disk"} <= set(names)
    assert {"fraud-workers-lag-high", "fraud-workers-idle"} <= set(names)  # scaling alarms
    assert len(names) >= 15


def test_every_alarm_has_a_runbook_section_and_every_section_an_alarm() -> None:
    text = RUNBOOK.read_text()
    sections = runbook_sections(text)
    assert len(sections) == len(set(sections)), "an alarm has two sections"
    missing, stale = unmatched(text)
    assert missing == [], f"alarms without a section in {RUNBOOK.name}"
    assert stale == [], f"sections of {RUNBOOK.name} for alarms that do not exist"


def test_a_missing_or_stale_section_is_found() -> None:
    text = RUNBOOK.read_text()
    without = text.replace("## `fraud-msk-disk`", "## Broker disk")
    assert unmatched(without) == (["fraud-msk-disk"], [])
    renamed = text.replace("## `fraud-dlq-rate`", "## `fraud-dlq-rate-high`")
    assert unmatched(renamed) == (["fraud-dlq-rate"], ["fraud-dlq-rate-high"])


def test_every_section_says_what_it_means_how_to_confirm_and_what_to_do() -> None:
    text = RUNBOOK.read_text()
    parts = re.split(r"^## ", text, flags=re.MULTILINE)
    for part in parts:
        if not part.startswith("`"):
            continue
        heading = part.splitlines()[0]
        for label in ("**Means**", "**Confirm**", "**Do**"):
            assert label in part, f"{heading}: no {label}"


def test_the_snippets_the_pages_include_exist() -> None:
    # pymdownx.snippets resolves these from the repository's root (the docs build fails on
    # a missing one, but the docs build runs elsewhere).
    for page in (RUNBOOK, DEPLOY):
        included = re.findall(r'^\s*--8<-- "([^"]+)"', page.read_text(), re.MULTILINE)
        for path in included:
            assert (REPO / path).is_file(), f"{page.name} includes {path}, which does not exist"
    assert re.search(r'--8<-- "infra/terraform/terraform.tfvars.example"', DEPLOY.read_text())


def test_the_deploy_page_names_only_outputs_that_exist() -> None:
    parsed: dict[str, Any] = hcl2.loads(
        (TERRAFORM / "outputs.tf").read_text(), serialization_options=_OPTIONS
    )
    outputs = {unquote(name) for block in parsed["output"] for name in block}
    for page in (RUNBOOK, DEPLOY):
        named = set(re.findall(r"terraform output (?:-raw |-json )?(\w+)", page.read_text()))
        assert named, page.name
        assert named <= outputs, f"{page.name} names outputs that do not exist: {named - outputs}"

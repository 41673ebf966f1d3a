"""modules/workers/run_admin_task.sh, which `terraform apply` runs to create the topics before
the workers' service: against a fake ``aws`` on PATH that records its calls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "infra/terraform/modules/workers/run_admin_task.sh"
TASK = "arn:aws:ecs:eu-west-1:123456789012:task/fraud/0123456789abcdef"
SETTINGS = {
    "REGION": "eu-west-1",
    "CLUSTER": "fraud",
    "TASK_DEFINITION": "arn:aws:ecs:eu-west-1:123456789012:task-definition/fraud-create-topics:3",
    "CONTAINER": "create-topics",
    "SUBNETS": "subnet-a,subnet-b",
    "SECURITY_GROUP": "sg-1",
    "LOG_GROUP": "/fraud/workers",
}

# Answers by subcommand; each call's argv is appended to $FAKE_CALLS as a JSON line.
FAKE_AWS = """\
import json, os, sys
with open(os.environ["FAKE_CALLS"], "a") as calls:
    calls.write(json.dumps(sys.argv[1:]) + "\\n")
command = " ".join(sys.argv[1:3])
if command == "ecs run-task":
    print(os.environ["FAKE_RUN_TASK"])
elif command == "ecs wait":
    sys.exit(int(os.environ.get("FAKE_WAIT_EXIT", "0")))
elif command == "ecs describe-tasks":
    print(os.environ["FAKE_DESCRIBE"])
elif command == "logs tail":
    print("2026-01-01T00:00:00 topic 'fraud.rules': 1 partitions")
"""


def run(
    tmp_path: Path,
    *,
    run_task: str,
    describe: str = "0\tEssential container in task exited",
    **env: str,
) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    fake = tmp_path / "aws"
    fake.write_text(f"#!{sys.executable}\n{FAKE_AWS}")
    fake.chmod(0o755)
    calls = tmp_path / "calls.jsonl"
    done = subprocess.run(
        ["sh", str(SCRIPT)],
        env={
            "PATH": f"{tmp_path}:{os.environ['PATH']}",
            "FAKE_CALLS": str(calls),
            "FAKE_RUN_TASK": run_task,
            "FAKE_DESCRIBE": describe,
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    made = [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []
    return done, made


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_a_task_that_exits_0_succeeds_after_it_stopped(tmp_path: Path) -> None:
    done, calls = run(tmp_path, run_task=f"{TASK}\tNone", **SETTINGS)
    assert done.returncode == 0, done.stderr
    assert [call[:2] for call in calls] == [
        ["ecs", "run-task"],
        ["ecs", "wait"],
        ["ecs", "describe-tasks"],
        ["logs", "tail"],
    ]
    started, waited, described, logs = calls
    assert option(started, "--task-definition") == SETTINGS["TASK_DEFINITION"]
    assert option(started, "--launch-type") == "FARGATE"
    assert option(started, "--network-configuration") == (
        "awsvpcConfiguration={subnets=[subnet-a,subnet-b],securityGroups=[sg-1],"
        "assignPublicIp=DISABLED}"
    )
    assert "--overrides" not in started
    for call in calls:
        assert option(call, "--region") == "eu-west-1"
    assert waited[2] == "tasks-stopped" and option(waited, "--tasks") == TASK
    assert "name=='create-topics'" in option(described, "--query")
    assert option(logs, "--log-stream-names") == "admin/create-topics/0123456789abcdef"
    assert "topic 'fraud.rules'" in done.stdout


def test_overrides_are_passed_to_run_task(tmp_path: Path) -> None:
    overrides = '{"containerOverrides":[{"name":"rules","command":["rules","list"]}]}'
    done, calls = run(tmp_path, run_task=f"{TASK}\tNone", OVERRIDES=overrides, **SETTINGS)
    assert done.returncode == 0, done.stderr
    assert option(calls[0], "--overrides") == overrides


@pytest.mark.parametrize(
    ("describe", "message"),
    [
        ("2\tEssential container in task exited", "exit code 2"),
        ("None\tCannotPullContainerError: pull image manifest", "CannotPullContainerError"),
    ],
)
def test_a_task_that_fails_fails_the_script_naming_why(
    tmp_path: Path, describe: str, message: str
) -> None:
    done, calls = run(tmp_path, run_task=f"{TASK}\tNone", describe=describe, **SETTINGS)
    assert done.returncode == 1
    assert message in done.stderr
    assert calls[-1][:2] == ["logs", "tail"]  # its log is shown first


def test_no_task_started_fails_at_once(tmp_path: Path) -> None:
    done, calls = run(tmp_path, run_task="None\tRESOURCE:ENI", **SETTINGS)
    assert done.returncode == 1
    assert "ECS started no task: RESOURCE:ENI" in done.stderr
    assert len(calls) == 1


def test_a_task_that_never_stops_fails(tmp_path: Path) -> None:
    done, _calls = run(tmp_path, run_task=f"{TASK}\tNone", FAKE_WAIT_EXIT="255", **SETTINGS)
    assert done.returncode == 1
    assert "did not stop within 10 minutes" in done.stderr


def test_a_missing_setting_fails_before_any_call(tmp_path: Path) -> None:
    settings = {k: v for k, v in SETTINGS.items() if k != "SUBNETS"}
    done, calls = run(tmp_path, run_task=f"{TASK}\tNone", **settings)
    assert done.returncode != 0
    assert "SUBNETS" in done.stderr
    assert calls == []

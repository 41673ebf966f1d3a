"""infra/lambda_zip.py: what goes into the notifier's deployment package."""

from __future__ import annotations

import importlib
import re
import zipfile
from pathlib import Path

from infra.lambda_zip import REPO, build, lambda_requirements, prune
from infra.local.stream_poller import DEFAULT_HANDLER


def test_requirements_come_pinned_from_setup_cfg() -> None:
    requirements = lambda_requirements()
    names = {r.split("==")[0].lower() for r in requirements}
    assert names == {"slack_sdk", "aws-lambda-powertools"}
    assert all("==" in r for r in requirements)


def test_zip_holds_the_handler_without_caches_and_is_reproducible(tmp_path: Path) -> None:
    first = build(tmp_path / "a" / "notifier.zip", with_deps=False)
    second = build(tmp_path / "b" / "notifier.zip", with_deps=False)

    with zipfile.ZipFile(first) as archive:
        names = archive.namelist()
        assert archive.testzip() is None
    assert "lambdas/__init__.py" in names
    assert "lambdas/notifier/handlers/notify.py" in names
    # The Slack buttons' two functions run from the same package.
    assert {"lambdas/slack_actions/handler.py", "lambdas/slack_actions/closer.py"} <= set(names)
    # The local stand-ins (stream poller, Slack receiver) live in infra/local, not in the zip.
    assert not [n for n in names if not n.startswith("lambdas/")]
    assert not [n for n in names if "stream_poller" in n or "slack_receiver" in n]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert names == sorted(names)
    # Same sources, same bytes: Terraform's source_code_hash changes only with the code.
    assert first.read_bytes() == second.read_bytes()


def test_prune_drops_what_the_lambda_runtime_already_has(tmp_path: Path) -> None:
    for name in (
        "boto3",
        "boto3-1.44.8.dist-info",
        "botocore",
        "s3transfer-0.16.0.dist-info",
        "slack_sdk",
        "slack_sdk-3.48.0.dist-info",
        "bin",
        "slack_sdk/__pycache__",
    ):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "slack_sdk" / "__init__.py").write_text("")

    removed = prune(tmp_path)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["slack_sdk", "slack_sdk-3.48.0.dist-info"]
    assert not (tmp_path / "slack_sdk" / "__pycache__").exists()
    assert (tmp_path / "slack_sdk" / "__init__.py").exists()
    assert "boto3-1.44.8.dist-info" in removed


def test_terraform_handler_names_a_function_that_is_in_the_zip(tmp_path: Path) -> None:
    main_tf = (REPO / "infra" / "terraform" / "modules" / "notifier" / "main.tf").read_text()
    found = re.search(r'^\s*handler\s*=\s*"([\w.]+)"', main_tf, re.MULTILINE)
    assert found is not None
    module, _, function = found.group(1).rpartition(".")
    assert callable(getattr(importlib.import_module(module), function))
    assert f"{module}:{function}" == DEFAULT_HANDLER  # the local poller runs the same function
    with zipfile.ZipFile(build(tmp_path / "notifier.zip", with_deps=False)) as archive:
        assert module.replace(".", "/") + ".py" in archive.namelist()

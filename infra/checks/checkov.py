"""Checkov on ``infra/terraform``, from a virtualenv of its own.

    python -m infra.checks.checkov install     # once; cached under ~/.cache/fraud-detection
    python -m infra.checks.checkov run [DIR]   # prints the failed checks, exit 1 if any

Checkov does not go into the project's ``.venv``: it pins ``boto3`` to an old exact
version (the project pins a newer one), caps ``packaging``, pulls in ``orjson`` (which
Faust would then pick up as its JSON codec, changing the bytes of table keys) and ships
``bc-python-hcl2``, a fork that installs the same ``hcl2`` module as python-hcl2. So it
lives in ``<cache>/checkov-<version>/`` and is run as a subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

CHECKOV_VERSION = "3.3.30"
REPO = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = REPO / "infra" / "terraform"
INSTALL_TIMEOUT_S = 900.0
RUN_TIMEOUT_S = 600.0
_MARKER = ".installed"


class CheckovError(RuntimeError):
    """Checkov could not be installed, found or run, or said something unreadable."""


@dataclass(frozen=True)
class Failure:
    check_id: str
    name: str
    resource: str
    file: str
    lines: tuple[int, int]

    def __str__(self) -> str:
        first, last = self.lines
        return f"{self.check_id} {self.resource} ({self.file}:{first}-{last}): {self.name}"


@dataclass(frozen=True)
class Report:
    passed: int
    failed: int
    skipped: int
    parsing_errors: int
    failures: tuple[Failure, ...]
    skipped_ids: tuple[str, ...]


def cache_dir() -> Path:
    """The project's cache of external tools (the same place as infra.local.stack's)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fraud-detection"


def venv_dir() -> Path:
    return cache_dir() / f"checkov-{CHECKOV_VERSION}"


def find_checkov() -> Path | None:
    """``$CHECKOV`` if set, else the cached install of the pinned version, else None."""
    configured = os.environ.get("CHECKOV")
    if configured:
        return Path(configured)
    target = venv_dir()
    # The marker is written last: a half-finished install is not an install.
    return target / "bin" / "checkov" if (target / _MARKER).exists() else None


def install() -> Path:
    """Install the pinned checkov into its own virtualenv; a no-op when it is there."""
    target = venv_dir()
    if (target / _MARKER).exists():
        return target / "bin" / "checkov"
    venv.EnvBuilder(with_pip=True, clear=True).create(target)
    command = [
        str(target / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        f"checkov=={CHECKOV_VERSION}",
    ]
    try:
        subprocess.run(command, check=True, timeout=INSTALL_TIMEOUT_S)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise CheckovError(f"installing checkov=={CHECKOV_VERSION} failed: {exc}") from None
    (target / _MARKER).write_text(f"checkov=={CHECKOV_VERSION}\n")
    return target / "bin" / "checkov"


def parse_report(text: str) -> Report:
    """Checkov's ``-o json`` output: one report object, or a list of them (one per
    framework); an empty result is ``{"passed": 0, ...}`` summary-only."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckovError(f"checkov printed no JSON: {exc}: {text[:300]!r}") from None
    reports = raw if isinstance(raw, list) else [raw]
    passed = failed = skipped = parsing_errors = 0
    failures: list[Failure] = []
    skipped_ids: list[str] = []
    for report in reports:
        if not isinstance(report, dict) or "summary" not in report:
            raise CheckovError(f"unexpected checkov report: {str(report)[:300]!r}")
        summary = report["summary"]
        passed += int(summary["passed"])
        failed += int(summary["failed"])
        skipped += int(summary["skipped"])
        parsing_errors += int(summary["parsing_errors"])
        results = report.get("results", {})
        for check in results.get("failed_checks", []):
            first, last = check.get("file_line_range") or (0, 0)
            failures.append(
                Failure(
                    check_id=str(check["check_id"]),
                    name=str(check.get("check_name", "")),
                    resource=str(check.get("resource", "")),
                    file=str(check.get("file_path", "")),
                    lines=(int(first), int(last)),
                )
            )
        skipped_ids.extend(str(c["check_id"]) for c in results.get("skipped_checks", []))
    if failed != len(failures):
        raise CheckovError(f"checkov's summary says {failed} failed but lists {len(failures)}")
    return Report(
        passed=passed,
        failed=failed,
        skipped=skipped,
        parsing_errors=parsing_errors,
        failures=tuple(failures),
        skipped_ids=tuple(skipped_ids),
    )


def run(directory: Path = TERRAFORM_DIR, checkov: Path | None = None) -> Report:
    """Run checkov's Terraform checks on ``directory`` (modules included), offline."""
    executable = checkov or find_checkov()
    if executable is None:
        raise CheckovError(
            f"checkov {CHECKOV_VERSION} is not installed: run `python -m infra.checks.checkov "
            "install` (or set CHECKOV to a checkov executable)"
        )
    command = [
        str(executable),
        "--directory",
        str(directory),
        "--framework",
        "terraform",
        "--output",
        "json",
        "--compact",
        "--quiet",
        # No download of external modules, no call to Prisma Cloud, no version check.
        "--skip-download",
    ]
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    env["LOG_LEVEL"] = "ERROR"
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        raise CheckovError(f"checkov did not finish within {RUN_TIMEOUT_S:.0f} s") from None
    # Exit code 1 means "some check failed"; anything else non-zero is checkov failing.
    if done.returncode not in (0, 1):
        raise CheckovError(f"checkov exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return parse_report(done.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.checks.checkov", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help=f"install checkov {CHECKOV_VERSION} into its own venv")
    run_parser = sub.add_parser("run", help="run the Terraform checks")
    run_parser.add_argument("directory", nargs="?", type=Path, default=TERRAFORM_DIR)
    args = parser.parse_args(argv)
    if args.command == "install":
        print(install())
        return 0
    report = run(args.directory)
    for failure in report.failures:
        print(failure)
    print(
        f"checkov: {report.passed} passed, {report.failed} failed, {report.skipped} skipped, "
        f"{report.parsing_errors} parsing errors"
    )
    return 1 if report.failed or report.parsing_errors else 0


if __name__ == "__main__":
    sys.exit(main())

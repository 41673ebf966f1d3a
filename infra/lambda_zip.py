"""Build ``build/notifier.zip``: ``lambdas/`` plus its dependencies, for Lambda's
python3.11 x86_64 runtime (handler ``lambdas.notifier.handlers.notify.handler``; the Slack
buttons' two functions, ``lambdas.slack_actions.handler.handler`` and
``lambdas.slack_actions.closer.handler``, run from the same package).

The dependencies (the ``lambda`` extra of setup.cfg, so versions live in one place)
are installed as manylinux wheels whatever machine builds the zip; boto3 and
botocore are left out because the runtime ships them. The archive is reproducible
(sorted entries, fixed timestamps and modes): unchanged sources give identical
bytes, so Terraform's ``source_code_hash`` only changes when the code does.

    python -m infra.lambda_zip [--output build/notifier.zip] [--no-deps]
"""

from __future__ import annotations

import argparse
import configparser
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO / "build" / "notifier.zip"
# Provided by the Lambda Python runtime; bundling them only adds ~20 MB.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer")
# Lambda's limits for a directly uploaded package.
MAX_ZIPPED_BYTES = 50 * 1024 * 1024
MAX_UNZIPPED_BYTES = 250 * 1024 * 1024
# The module of the function's handler (``lambdas.notifier.handlers.notify.handler``).
HANDLER_FILE = "notifier/handlers/notify.py"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest timestamp a zip entry can hold
_SKIP_DIRS = {"__pycache__", ".mypy_cache", ".pytest_cache"}
_SKIP_SUFFIXES = (".pyc", ".pyo")


class BuildError(RuntimeError):
    pass


def lambda_requirements(setup_cfg: Path = REPO / "setup.cfg") -> list[str]:
    """The pinned requirements of setup.cfg's ``lambda`` extra."""
    parser = configparser.ConfigParser()
    if not parser.read(setup_cfg):
        raise BuildError(f"{setup_cfg} not found")
    raw = parser.get("options.extras_require", "lambda", fallback="")
    requirements = [line.split("#", 1)[0].strip() for line in raw.splitlines()]
    requirements = [r for r in requirements if r]
    if not requirements:
        raise BuildError(f"{setup_cfg}: [options.extras_require] has no 'lambda' entry")
    return requirements


def pip_install(
    requirements: Sequence[str], target: Path, *, python_version: str, platform: str
) -> None:
    """Install wheels for the Lambda runtime (not this machine) into ``target``."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        "--platform",
        platform,
        "--implementation",
        "cp",
        "--python-version",
        python_version,
        "--only-binary=:all:",
        "--target",
        str(target),
        *requirements,
    ]
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        raise BuildError(f"pip install failed (exit {result.returncode}): {' '.join(command)}")


def _canonical(name: str) -> str:
    return name.lower().replace("-", "_")


def prune(site: Path, drop: Iterable[str] = RUNTIME_PROVIDED) -> list[str]:
    """Remove packages the runtime provides, their metadata, caches and scripts."""
    dropped = {_canonical(n) for n in drop}
    removed: list[str] = []
    for entry in sorted(site.iterdir()):
        stem = _canonical(entry.name.split("-", 1)[0]) if entry.suffix == ".dist-info" else None
        name = _canonical(entry.name)
        if name in dropped or stem in dropped or entry.name == "bin":
            removed.append(entry.name)
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    for cache in sorted(site.rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache, ignore_errors=True)
    return removed


def _files(root: Path, prefix: str = "") -> list[tuple[Path, str]]:
    out: list[tuple[Path, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for filename in sorted(filenames):
            if filename.endswith(_SKIP_SUFFIXES):
                continue
            path = Path(dirpath) / filename
            out.append((path, prefix + path.relative_to(root).as_posix()))
    return out


def write_zip(entries: Iterable[tuple[Path, str]], output: Path) -> int:
    """A reproducible zip of ``(file, name in archive)``; returns the unzipped size."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(output.suffix + ".tmp")
    total = 0
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for path, name in sorted(entries, key=lambda e: e[1]):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            executable = os.access(path, os.X_OK)
            info.external_attr = (0o100755 if executable else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            data = path.read_bytes()
            total += len(data)
            archive.writestr(info, data)
    tmp.replace(output)  # never leave a half-written zip where Terraform would pick it up
    return total


def build(
    output: Path = DEFAULT_OUTPUT,
    *,
    with_deps: bool = True,
    python_version: str = "3.11",
    platform: str = "manylinux2014_x86_64",
    source: Path = REPO / "lambdas",
) -> Path:
    if not (source / HANDLER_FILE).is_file():
        raise BuildError(f"{source}/{HANDLER_FILE} not found")
    with tempfile.TemporaryDirectory(prefix="notifier-zip-") as tmp:
        entries = _files(source, prefix="lambdas/")
        if with_deps:
            site = Path(tmp) / "site"
            site.mkdir()
            pip_install(
                lambda_requirements(), site, python_version=python_version, platform=platform
            )
            prune(site)
            entries += _files(site)
        unzipped = write_zip(entries, output)
    zipped = output.stat().st_size
    if zipped > MAX_ZIPPED_BYTES or unzipped > MAX_UNZIPPED_BYTES:
        raise BuildError(
            f"{output}: {zipped} bytes zipped / {unzipped} unzipped exceeds Lambda's "
            f"{MAX_ZIPPED_BYTES} / {MAX_UNZIPPED_BYTES}"
        )
    return output


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.lambda_zip", description="Build the notifier Lambda's zip."
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--no-deps", action="store_true", help="package lambdas/ only (no pip, no network)"
    )
    parser.add_argument("--python-version", default="3.11")
    parser.add_argument("--platform", default="manylinux2014_x86_64")
    args = parser.parse_args(argv)
    try:
        output = build(
            args.output,
            with_deps=not args.no_deps,
            python_version=args.python_version,
            platform=args.platform,
        )
    except BuildError as exc:
        print(f"lambda-zip: {exc}", file=sys.stderr)
        return 1
    with zipfile.ZipFile(output) as archive:
        count = len(archive.infolist())
    print(f"wrote {output} ({count} files, {output.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Publish a rule file from S3: the put-rules one-shot task of ``modules/workers``.

    python -c "<this file>"    # in the worker image; RULES_* from the task definition and the run

The worker image is read-only and holds only the shipped rules, so a rule of your own
reaches AWS as a file under the stack's rules prefix: ``RULES_S3_PREFIX`` (set by the task
definition, ``s3://<archive bucket>/rules/``; the task role may read nothing else). The run
names the file with ``RULES_FILE``, a container override (Terraform's output
``put_rules_from_s3_command``): a name under the prefix (``gb-pair.yaml``) or its whole
``s3://`` URL. The file is downloaded to ``/tmp/rules/`` (the task's only writable path) and
handed to ``faust -A app rules put``, which validates it, checks it against the rules in
force and the limits and publishes it, as on a laptop; its exit status is the task's.

Exit 2 naming the problem when ``RULES_FILE`` is missing or outside the prefix, or the object
cannot be downloaded.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath

DOWNLOAD_DIR = "/tmp/rules"


class RulesFileError(ValueError):
    """``RULES_S3_PREFIX`` or ``RULES_FILE`` does not name a file of the rules prefix."""


def split_s3_url(url: str) -> tuple[str, str]:
    """``(bucket, key)`` of ``s3://bucket/key``."""
    if not url.startswith("s3://"):
        raise RulesFileError(f"{url!r} is not an s3:// URL")
    bucket, _, key = url.removeprefix("s3://").partition("/")
    if not bucket:
        raise RulesFileError(f"{url!r} names no bucket")
    return bucket, key


def object_location(prefix: str, name: str) -> tuple[str, str]:
    """``(bucket, key)`` of the rule file ``name`` (a name under ``prefix``, or a whole
    ``s3://`` URL) when it lies under ``prefix``."""
    prefix_bucket, prefix_key = split_s3_url(prefix)
    if prefix_key and not prefix_key.endswith("/"):
        prefix_key += "/"
    bucket, key = split_s3_url(name) if name.startswith("s3://") else (prefix_bucket, "")
    if not name.startswith("s3://"):
        key = prefix_key + name.lstrip("/")
    parts = key.removeprefix(prefix_key).split("/")
    if bucket != prefix_bucket or not key.startswith(prefix_key) or not parts[-1]:
        raise RulesFileError(f"{name!r} is not a file under {prefix}")
    if any(part in ("", ".", "..") for part in parts):
        raise RulesFileError(f"{name!r}: empty, '.' and '..' path segments are refused")
    return bucket, key


def local_path(key: str) -> str:
    """Where the object ``key`` is downloaded: its file name under DOWNLOAD_DIR."""
    return f"{DOWNLOAD_DIR}/{PurePosixPath(key).name}"


def s3_download(bucket: str, key: str, path: str) -> None:
    """Download with the task role's credentials (the image has boto3)."""
    import boto3  # noqa: PLC0415 - only the image's task needs it

    os.makedirs(os.path.dirname(path), exist_ok=True)
    boto3.client("s3").download_file(bucket, key, path)


def exec_rules_put(path: str) -> int:
    """Become ``faust -A app rules put PATH`` (its exit status is the task's)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp("faust", ["faust", "-A", "app", "rules", "put", path])


def main(
    env: Mapping[str, str] | None = None,
    download: Callable[[str, str, str], None] = s3_download,
    put: Callable[[str], int] = exec_rules_put,
) -> int:
    source = os.environ if env is None else env
    prefix = source.get("RULES_S3_PREFIX", "").strip()
    name = source.get("RULES_FILE", "").strip()
    if not prefix:
        print(
            "put-rules: RULES_S3_PREFIX is not set (the task definition sets it)", file=sys.stderr
        )
        return 2
    if not name:
        print(
            f"put-rules: set RULES_FILE to a file under {prefix} (a container override)",
            file=sys.stderr,
        )
        return 2
    try:
        bucket, key = object_location(prefix, name)
    except RulesFileError as exc:
        print(f"put-rules: {exc}", file=sys.stderr)
        return 2
    path = local_path(key)
    try:
        download(bucket, key, path)
    except Exception as exc:  # botocore's ClientError, BotoCoreError, or an OSError
        print(f"put-rules: cannot download s3://{bucket}/{key}: {exc}", file=sys.stderr)
        return 2
    print(f"put-rules: s3://{bucket}/{key} -> faust -A app rules put {path}")
    return put(path)


if __name__ == "__main__":
    sys.exit(main())

"""Where the archive lives and how its files are named, written and found.

``FRAUD_ARCHIVE_URL`` is a local directory (the default, ``./.cache/archive``) or
``s3://bucket/prefix``; both go through pyarrow's filesystems, so the archive is read the
same way (pyarrow, DuckDB, Spark, Athena) wherever it is. Layout, Hive-style::

    <root>/payments/event_date=2026-11-29/event_hour=14/payments.raw-3-00000000000000120000-00000000000000124999.parquet

A file is named by its topic, partition and the offsets of its first and last row; with its
event hour, that says which rows it holds, so the archive's consumer can tell from the names
alone where a partition resumes (``app.history.resume``). It is written whole before it is
visible: locally to a hidden temporary name then renamed (a rename is atomic on POSIX); on
S3 an object only appears once its upload completes.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

_NAME = re.compile(
    r"^(?P<topic>.+)-(?P<partition>\d+)-(?P<first>\d{20})-(?P<last>\d{20})\.parquet$"
)
# The two directories above a file: its event hour, which says which rows its range holds.
_HOUR = re.compile(r"/event_date=(?P<date>\d{4}-\d{2}-\d{2})/event_hour=(?P<hour>\d{2})/[^/]+$")


class ArchiveError(ValueError):
    """The archive cannot be reached or read; the message says where and why."""


@dataclass(frozen=True)
class Archive:
    """An archive root on a pyarrow filesystem."""

    filesystem: pafs.FileSystem
    root: str  # a path on ``filesystem``, without a trailing slash
    url: str
    local: bool

    @classmethod
    def at(cls, url: str, *, endpoint: str | None = None, region: str | None = None) -> Archive:
        """The archive at ``url``: a directory path (or file:// URL) or ``s3://bucket/prefix``.

        For S3, credentials come from the usual AWS chain (environment, profile, instance
        role); ``endpoint`` points at an S3-compatible server instead of AWS.
        """
        parsed = urlparse(url)
        if parsed.scheme == "s3":
            if not parsed.netloc:
                raise ArchiveError(f"{url!r} names no bucket (s3://bucket/prefix)")
            options: dict[str, object] = {}
            if region:
                options["region"] = region
            if endpoint:
                if "://" not in endpoint:
                    raise ArchiveError(f"endpoint {endpoint!r} must be http(s)://host:port")
                endpoint_url = urlparse(endpoint)
                options["endpoint_override"] = endpoint_url.netloc or endpoint
                options["scheme"] = endpoint_url.scheme or "https"
                # S3-compatible servers on loopback are addressed by path, not by bucket host.
                options["force_virtual_addressing"] = False
            root = f"{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")
            return cls(pafs.S3FileSystem(**options), root, url, local=False)
        if parsed.scheme not in {"", "file"}:
            raise ArchiveError(f"{url!r}: the archive is a directory or an s3:// URL")
        path = Path(parsed.path if parsed.scheme == "file" else url).absolute()
        return cls(pafs.LocalFileSystem(), str(path), str(path), local=True)

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def file_path(
        self, kind: str, date: str, hour: int, topic: str, partition: int, first: int, last: int
    ) -> str:
        name = f"{topic}-{partition}-{first:020d}-{last:020d}.parquet"
        return self.path(kind, f"event_date={date}", f"event_hour={hour:02d}", name)

    def write(self, path: str, table: pa.Table) -> None:
        """Write ``table`` to ``path`` so that readers see all of it or nothing."""
        directory = path.rsplit("/", 1)[0]
        options = _write_options(table.schema)
        if not self.local:
            # S3 has no directories (create_dir would leave empty "dir/" objects behind).
            try:
                pq.write_table(table, path, filesystem=self.filesystem, **options)
            except OSError as exc:
                raise ArchiveError(f"cannot write {self.url}: {exc}") from None
            return
        self.filesystem.create_dir(directory, recursive=True)
        temporary = f"{directory}/.{uuid.uuid4().hex}.tmp"
        pq.write_table(table, temporary, filesystem=self.filesystem, **options)
        # The data must be on disk before the name says it is there: an offset is committed
        # once the rename returns.
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        self.filesystem.move(temporary, path)

    def files(self, kind: str, dates: Iterable[str] | None = None) -> list[ArchivedFile]:
        """Every archived file of ``kind`` (payments, alerts, dlq, labels, ...), in no order;
        with ``dates`` (``2026-11-20``), only those dates' directories are listed, so a
        reader of a week does not list the whole archive."""
        roots = (
            [self.path(kind)]
            if dates is None
            else [self.path(kind, f"event_date={date}") for date in dates]
        )
        try:
            if not self.local:
                # allow_not_found also hides a missing bucket: say so instead of "no files".
                bucket = self.root.split("/", 1)[0]
                if self.filesystem.get_file_info(bucket).type == pafs.FileType.NotFound:
                    raise ArchiveError(f"cannot list {self.url}: bucket {bucket!r} does not exist")
            infos = [
                info
                for root in roots
                for info in self.filesystem.get_file_info(
                    pafs.FileSelector(root, allow_not_found=True, recursive=True)
                )
            ]
        except OSError as exc:
            raise ArchiveError(f"cannot list {self.url}/{kind}: {exc}") from None
        found = []
        for info in infos:
            match = _NAME.match(info.base_name) if info.type == pafs.FileType.File else None
            hour = _HOUR.search(info.path) if match is not None else None
            # The archive writes every file under its event hour; a file elsewhere is not
            # one of its own and says nothing about which rows a replay may skip.
            if match is not None and hour is not None:
                found.append(
                    ArchivedFile(
                        path=info.path,
                        topic=match["topic"],
                        partition=int(match["partition"]),
                        first=int(match["first"]),
                        last=int(match["last"]),
                        date=hour["date"],
                        hour=int(hour["hour"]),
                    )
                )
        return found


# Text columns that hold a new value in (nearly) every row: a dictionary of one is as long as
# the column itself, built and then dropped for nothing.
_UNIQUE_TEXT = frozenset({"txn_id", "alert_id"})


def use_system_memory_pool() -> None:
    """Arrow's buffers in this process from the C library's allocator, not Arrow's bundled
    jemalloc: the archive's process calls it before its first roll. jemalloc hands each roll's
    freed pages back to the kernel (its decay) and the next roll faults them in again: 0.2 to
    0.75 CPU-s of system time per 400 000 payments, varying run to run, where the system
    allocator's stays at 0.2-0.28 (``bench.archive_cost``, ``docs/performance.md``)."""
    pa.set_memory_pool(pa.system_memory_pool())


def _write_options(schema: pa.Schema) -> dict[str, Any]:
    """zstd (its default level), and dictionaries for the text columns whose values repeat
    (cards, accounts, merchants, currencies, ...), not for numbers, times and unique ids,
    whose dictionaries cost time and bytes: payments are written about a fifth faster and
    ~14 % smaller than with a dictionary for every column (``docs/performance.md``)."""
    texts = [f.name for f in schema if pa.types.is_string(f.type) and f.name not in _UNIQUE_TEXT]
    return {"compression": "zstd", "use_dictionary": texts}


@dataclass(frozen=True, slots=True)
class ArchivedFile:
    path: str
    topic: str
    partition: int
    first: int  # offset of its first row
    last: int  # offset of its last row
    date: str  # its event date (2026-11-29) and hour, from its directories
    hour: int

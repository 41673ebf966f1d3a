"""The Parquet archive on S3: a real S3 server (versitygw on loopback), not a mock.

The same payments, written the archive agent's way into an S3 bucket and into a local
directory, must backtest to the same alerts: the archive's S3 path handling, listing and
reading are then as good as the local ones the unit tests check.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.cases.labels import disposition_label, parse_chargebacks
from app.detection.rules import SEED_RULE
from app.history.backtest import backtest
from app.history.files import Archive, ArchivedFile, ArchiveError
from app.history.outcomes import outcomes_report
from app.history.resume import resume
from infra.local.objectstore import LocalS3
from tests.factories import closed_case
from tests.unit.history.test_backtest import LATENESS_MS, stream, write_payments
from tests.unit.history.test_evidence import write_alerts
from tests.unit.history.test_outcomes import write_labels

pytestmark = pytest.mark.integration
BUCKET = "fraud-archive"
PREFIX = "history/v1"
PARTITIONS = 3
SINCE = datetime(2026, 11, 20, tzinfo=UTC)
UNTIL = SINCE + timedelta(days=7)


@pytest.fixture(scope="module")
def s3() -> Iterator[LocalS3]:
    with LocalS3() as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture
def aws(s3: LocalS3, monkeypatch: pytest.MonkeyPatch) -> LocalS3:
    """The server's credentials in the environment, where pyarrow's S3 client reads them;
    anything that would override them (a session token, a profile) removed."""
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    return s3


def relative(archive: Archive, files: list[ArchivedFile]) -> list[tuple[str, int, int, int]]:
    """(path under the root, partition, first offset, last offset), sorted."""
    found = []
    for f in files:
        assert f.path.startswith(archive.root + "/"), f.path
        found.append((f.path.removeprefix(archive.root + "/"), f.partition, f.first, f.last))
    return sorted(found)


def test_a_backtest_on_s3_equals_the_same_backtest_on_a_local_directory(
    aws: LocalS3, tmp_path: Path
) -> None:
    payments = stream()
    remote = Archive.at(f"s3://{BUCKET}/{PREFIX}", endpoint=aws.endpoint, region=aws.region)
    local = Archive.at(str(tmp_path / "archive"))
    assert (remote.root, remote.local) == (f"{BUCKET}/{PREFIX}", False)
    write_payments(remote, payments)
    write_payments(local, payments)

    on_s3 = backtest(remote, SEED_RULE, SINCE, UNTIL, LATENESS_MS)
    on_disk = backtest(local, SEED_RULE, SINCE, UNTIL, LATENESS_MS)
    assert on_s3.payments == on_disk.payments == len(payments)
    assert [a.alert_id for a in on_s3.alerts] == [a.alert_id for a in on_disk.alerts]
    assert len(on_s3.alerts) > 5
    timing = {"seconds", "payments_per_second"}
    assert {k: v for k, v in on_s3.to_json().items() if k not in timing} == {
        k: v for k, v in on_disk.to_json().items() if k not in timing
    }

    # The listing finds every file, names parsed back to partitions and offset ranges that
    # cover each partition's offsets exactly once.
    files = remote.files("payments")
    assert relative(remote, files) == relative(local, local.files("payments"))
    assert {f.topic for f in files} == {"payments.raw"}
    for partition in range(PARTITIONS):
        ranges = sorted((f.first, f.last) for f in files if f.partition == partition)
        count = sum(1 for p in payments if hash(p.card_id) % PARTITIONS == partition)
        covered = [n for first, last in ranges for n in range(first, last + 1)]
        assert sorted(covered) == list(range(count))
        # Where the archive's consumer would resume reads the same off S3 as off a directory.
        from_s3 = resume([f for f in files if f.partition == partition], None)
        from_disk = resume([f for f in local.files("payments") if f.partition == partition], None)
        assert from_s3 == from_disk and from_s3.offset == max(first for first, _ in ranges)
    # They are objects on the server, not something cached on the client.
    stored = s3_objects(aws, f"{PREFIX}/payments")
    assert sorted(stored) == sorted(f.path.removeprefix(f"{BUCKET}/") for f in files), (
        "the server holds exactly the files listed"
    )
    assert remote.files("alerts") == []


def s3_objects(s3: LocalS3, prefix: str) -> list[str]:
    """Object keys under ``prefix``, as the server's posix backend stores them."""
    bucket = s3.data_dir / BUCKET
    return [
        str(p.relative_to(bucket))
        for p in (bucket / prefix).rglob("*.parquet")
        if p.is_file() and not p.name.startswith(".")
    ]


def test_a_missing_bucket_cannot_be_read_and_says_so(aws: LocalS3) -> None:
    nowhere = Archive.at("s3://no-such-bucket/history", endpoint=aws.endpoint, region=aws.region)
    with pytest.raises(ArchiveError, match="cannot read the archive at s3://no-such-bucket"):
        backtest(nowhere, SEED_RULE, SINCE, UNTIL, LATENESS_MS)


def test_wrong_credentials_are_an_archive_error_not_an_empty_archive(
    aws: LocalS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    archive = Archive.at(f"s3://{BUCKET}/{PREFIX}", endpoint=aws.endpoint, region=aws.region)
    with pytest.raises(ArchiveError, match="cannot list"):
        archive.files("payments")
    with pytest.raises(ArchiveError, match="cannot read the archive"):
        backtest(archive, SEED_RULE, SINCE, UNTIL, LATENESS_MS)


def test_outcomes_on_s3_equal_the_same_outcomes_on_a_local_directory(
    aws: LocalS3, tmp_path: Path
) -> None:
    """The labels' date directories are listed one level down first (not the whole tree)."""
    payments = stream(3000)
    remote = Archive.at(f"s3://{BUCKET}/outcomes", endpoint=aws.endpoint, region=aws.region)
    local = Archive.at(str(tmp_path / "archive"))
    write_payments(local, payments)
    alerts = backtest(local, SEED_RULE, SINCE, UNTIL, LATENESS_MS).alerts
    first, second = alerts[0], alerts[1]
    labels = [
        disposition_label(closed_case(alert_ids=(second.alert_id,), txn_ids=second.txn_ids)),
        *parse_chargebacks(f"txn_id,date,reason\n{first.txn_ids[0]},2026-11-21,stolen\n"),
    ]
    given_ms = int((SINCE + timedelta(days=1)).timestamp() * 1000)
    write_payments(remote, payments)
    for archive in (remote, local):
        write_alerts(archive, alerts)
        write_labels(archive, labels, given_ms)

    on_s3 = outcomes_report(remote, SINCE, UNTIL)
    on_disk = outcomes_report(local, SINCE, UNTIL)
    assert on_s3 == on_disk
    [seed] = on_s3["rules"]
    assert (on_s3["labels"], seed["alerts"]) == (2, len(alerts))
    assert (seed["fraud_alerts"], seed["not_fraud_alerts"], seed["cases"]) == (1, 1, 1)
    assert (seed["fraud_payments_caught"], seed["fraud_payments"], seed["recall"]) == (1, 1, 1.0)
    # Labels given before the period's first day are not read.
    assert outcomes_report(remote, SINCE + timedelta(days=2), UNTIL)["labels"] == 0

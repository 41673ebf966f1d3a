"""infra.local.demo: what it hands a second terminal, and how it leaves the archive and the
env file. (tests/integration/test_journeys.py runs the demo itself.)"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import subprocess
from dataclasses import replace
from pathlib import Path

from app.detection.rules import KINDS
from app.worker.settings import Settings
from infra.local.demo import (
    ARCHIVE,
    DEFAULT_WEB_PORT,
    REPO,
    archive_location,
    demo_rules,
    env_file_text,
    export_lines,
    parse_args,
    remove_env_file,
    render,
    session_exports,
    set_archive_aside,
    web_port,
    write_env_file,
)
from tests import factories

DEFAULTS = Settings()


def exports(settings: Settings = DEFAULTS, archive: str = "/a/.cache/archive") -> dict[str, str]:
    return session_exports(settings, "kafka://127.0.0.1:21196", "s3cr3t", "http://h:6066", archive)


def test_the_exports_are_the_broker_the_token_the_web_url_and_the_archive() -> None:
    assert exports() == {
        "FRAUD_BROKER": "kafka://127.0.0.1:21196",
        "FRAUD_API_TOKEN": "s3cr3t",
        "DEMO_WEB_URL": "http://h:6066",
        "FRAUD_ARCHIVE_URL": "/a/.cache/archive",
    }


def test_topics_are_exported_only_when_they_are_not_the_defaults() -> None:
    renamed = replace(Settings(), topic_payments="pay.in", topic_rules="my.rules")
    assert list(exports(renamed)) == [
        "FRAUD_BROKER",
        "FRAUD_TOPIC_PAYMENTS",
        "FRAUD_TOPIC_RULES",
        "FRAUD_API_TOKEN",
        "DEMO_WEB_URL",
        "FRAUD_ARCHIVE_URL",
    ]
    assert exports(renamed)["FRAUD_TOPIC_PAYMENTS"] == "pay.in"


def test_the_env_file_sources_in_bash_and_only_its_owner_reads_it(tmp_path: Path) -> None:
    archive = str(tmp_path / "an archive's place")  # quoted as the shell needs
    path = tmp_path / "cache" / "demo.env"
    write_env_file(path, env_file_text(export_lines(exports(archive=archive)), 1, str(path)))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    script = f'source "{path}" && printf "%s\\n" "$FRAUD_API_TOKEN" "$FRAUD_ARCHIVE_URL"'
    shown = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ["PATH"]},
    ).stdout.splitlines()
    assert shown == ["s3cr3t", archive]
    assert [p.name for p in path.parent.iterdir()] == ["demo.env"]  # no scratch file left


def test_the_env_file_is_removed_only_while_it_is_still_this_sessions(tmp_path: Path) -> None:
    path = tmp_path / "demo.env"
    write_env_file(path, "ours\n")
    remove_env_file(path, "another session's\n")
    assert path.exists()
    remove_env_file(path, "ours\n")
    assert not path.exists()
    remove_env_file(path, "ours\n")  # gone already: nothing to do


def test_the_last_sessions_archive_is_set_aside(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    assert set_archive_aside(archive) is None  # none yet
    archive.mkdir()
    assert set_archive_aside(archive) is None  # empty: nothing hides anything
    (archive / "payments").mkdir()
    moved = set_archive_aside(archive)
    assert moved == tmp_path / "archive.previous"
    assert (moved / "payments").is_dir()
    assert not archive.exists()
    (archive / "alerts").mkdir(parents=True)
    set_archive_aside(archive)
    assert [p.name for p in moved.iterdir()] == ["alerts"]  # the older one replaced


def test_the_archive_is_the_repositorys_unless_fraud_archive_url_says() -> None:
    assert archive_location({}) == str(ARCHIVE)
    assert archive_location({"FRAUD_ARCHIVE_URL": "./elsewhere"}) == str(REPO / "elsewhere")
    assert archive_location({"FRAUD_ARCHIVE_URL": "s3://b/p"}) == "s3://b/p"


def test_the_web_port_is_6066_unless_it_is_taken() -> None:
    assert web_port(7001) == 7001
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past a TIME_WAIT
        with contextlib.suppress(OSError):  # someone listens there already: as good
            holder.bind(("127.0.0.1", DEFAULT_WEB_PORT))
            holder.listen()
        port = web_port(None)
    assert port != DEFAULT_WEB_PORT
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))


def test_the_demo_publishes_one_rule_of_each_kind_and_prints_what_explains_an_alert() -> None:
    rules = demo_rules()
    assert {rule.kind for rule in rules} == set(KINDS)
    assert len({rule.rule_id for rule in rules}) == len(rules)
    travel = factories.alert(kind="geo_velocity", explanation=(("distance_km", "5570"),))
    line = render({**travel.to_dict(), "trigger_produced_at_ms": 0})
    assert line.startswith("ALERT high-value-burst") and line.endswith(" distance_km=5570")
    assert "distance_km" not in render({**factories.alert().to_dict()})


def test_the_demos_command_line_parses_with_and_without_options() -> None:
    """`make demo` runs it with none: two options of one name would stop it at once."""
    assert parse_args([]).patterns == 0.001
    # An hour of event time first: the absence rule's 30 minutes and the lateness pass in it.
    assert parse_args([]).backfill == 3600.0 and parse_args(["--backfill", "0"]).backfill == 0
    assert parse_args(["--patterns", "0.01", "--no-analyst"]).patterns == 0.01

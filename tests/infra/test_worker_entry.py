"""infra/terraform/worker_entry.py: the worker task's entry point, which advertises the task's
own address (FRAUD_WEB_HOST) so that card lookups are forwarded to the right worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from infra.terraform.worker_entry import main, read_metadata, task_address

# The shape of ECS's container metadata v4 on Fargate (trimmed).
METADATA = {
    "DockerId": "cd189a933e5849daa93386466019ab50-2495160603",
    "Name": "worker",
    "Networks": [
        {
            "NetworkMode": "awsvpc",
            "IPv4Addresses": ["10.40.17.23"],
            "IPv4SubnetCIDRBlock": "10.40.16.0/20",
        }
    ],
}
URL = "http://169.254.170.2/v4/cd189a933e5849daa93386466019ab50-2495160603"


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], dict[str, str]]] = []

    def __call__(self, arguments: Sequence[str], env: Mapping[str, str]) -> int:
        self.calls.append((list(arguments), dict(env)))
        return 0


def test_the_task_address_is_the_first_ipv4_of_its_network() -> None:
    assert task_address(METADATA) == "10.40.17.23"
    with pytest.raises(LookupError):
        task_address({"Networks": [{"NetworkMode": "awsvpc", "IPv4Addresses": []}]})
    with pytest.raises(LookupError):
        task_address({})


def test_the_worker_starts_with_its_own_address_advertised() -> None:
    execute = Recorder()
    env = {"ECS_CONTAINER_METADATA_URI_V4": URL, "FRAUD_WEB_BIND": "0.0.0.0"}
    asked: list[str] = []

    def metadata(url: str) -> Mapping[str, Any]:
        asked.append(url)
        return METADATA

    assert main(["worker", "-l", "info"], env, metadata, execute) == 0
    assert asked == [URL]
    ((arguments, started_env),) = execute.calls
    assert arguments == ["worker", "-l", "info"]
    assert started_env["FRAUD_WEB_HOST"] == "10.40.17.23"
    assert started_env["FRAUD_WEB_BIND"] == "0.0.0.0"


def test_a_web_host_already_set_wins() -> None:
    execute = Recorder()

    def metadata(url: str) -> Mapping[str, Any]:
        raise AssertionError("not asked")

    env = {"FRAUD_WEB_HOST": "worker-1.internal", "ECS_CONTAINER_METADATA_URI_V4": URL}
    assert main([], env, metadata, execute) == 0
    assert execute.calls == [(["worker", "-l", "info"], env)]


@pytest.mark.parametrize(
    ("env", "answer", "message"),
    [
        ({}, METADATA, "ECS_CONTAINER_METADATA_URI_V4 is not set"),
        ({"ECS_CONTAINER_METADATA_URI_V4": URL}, {"Networks": []}, "names no IPv4 address"),
        ({"ECS_CONTAINER_METADATA_URI_V4": URL}, None, "cannot read this task's address"),
    ],
)
def test_no_address_no_worker(
    env: dict[str, str],
    answer: Mapping[str, Any] | None,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    execute = Recorder()

    def metadata(url: str) -> Mapping[str, Any]:
        if answer is None:
            raise OSError("connection refused")
        return answer

    assert main(["worker"], env, metadata, execute) == 2
    assert message in capsys.readouterr().err
    assert execute.calls == []


@pytest.fixture
def metadata_server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(METADATA).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v4/abc"
    finally:
        server.shutdown()
        server.server_close()


def test_the_metadata_is_read_over_http(metadata_server: str) -> None:
    assert task_address(read_metadata(metadata_server)) == "10.40.17.23"


def test_the_script_execs_faust_with_the_address_the_way_the_task_runs_it(
    metadata_server: str, tmp_path: Path
) -> None:
    # The worker task runs worker_entry.py's source with `python -c` and the worker's
    # arguments; a fake `faust` on PATH prints what it was started with.
    fake = tmp_path / "faust"
    fake.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        "print(json.dumps([sys.argv[1:], os.environ.get('FRAUD_WEB_HOST')]))\n"
    )
    fake.chmod(0o755)
    source = (Path(__file__).resolve().parents[2] / "infra/terraform/worker_entry.py").read_text()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
    done = subprocess.run(
        [sys.executable, "-c", source, "worker", "-l", "info"],
        env={
            **environment,
            "PATH": f"{tmp_path}:{os.environ['PATH']}",
            "ECS_CONTAINER_METADATA_URI_V4": metadata_server,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    started = json.loads(done.stdout.splitlines()[-1])
    assert started == [["-A", "app", "worker", "-l", "info"], "10.40.17.23"]

"""The container files: Dockerfile, docker-compose.yml, .dockerignore and requirements.lock.

Static only (no Docker engine here, so no image is built and nothing is started): hadolint,
the Compose Specification's JSON schema and the checks of ``infra/checks/containers.py``.
Every check is also shown to catch a broken copy, so none of them passes vacuously.
"""

from __future__ import annotations

import ast
import copy
import importlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.checks import containers as c

REPO = Path(__file__).resolve().parents[2]

# A small Dockerfile that holds to the policy; each broken fixture changes one thing of it.
GOOD_DOCKERFILE = """\
ARG BASE=python:3.11.14-slim-bookworm@sha256:{digest}
FROM ${{BASE}} AS builder
RUN apt-get update \\
    && apt-get install -y --no-install-recommends gcc \\
    && rm -rf /var/lib/apt/lists/*
RUN pip wheel --no-deps --wheel-dir /wheels -r requirements.lock
FROM ${{BASE}} AS base
RUN useradd --system --uid 10001 app
FROM base AS final
USER 10001:10001
HEALTHCHECK CMD ["python", "-c", "print(1)"]
CMD ["python", "-m", "http.server"]
""".format(digest="a" * 64)

BROKEN_DOCKERFILES: dict[str, tuple[Callable[[str], str], str]] = {
    "no USER": (lambda t: t.replace("USER 10001:10001\n", ""), "DF003"),
    "USER root": (lambda t: t.replace("USER 10001:10001", "USER root"), "DF003"),
    "USER 0": (lambda t: t.replace("USER 10001:10001", "USER 0:0"), "DF003"),
    "USER by name": (lambda t: t.replace("USER 10001:10001", "USER app"), "DF003"),
    "no HEALTHCHECK": (
        lambda t: t.replace('HEALTHCHECK CMD ["python", "-c", "print(1)"]\n', ""),
        "DF004",
    ),
    "HEALTHCHECK NONE": (
        lambda t: t.replace('HEALTHCHECK CMD ["python", "-c", "print(1)"]', "HEALTHCHECK NONE"),
        "DF004",
    ),
    "latest tag": (lambda t: "ARG BASE=python:latest\n" + t.split("\n", 1)[1], "DF002"),
    "untagged": (lambda t: "ARG BASE=python\n" + t.split("\n", 1)[1], "DF002"),
    "tag without digest": (
        lambda t: "ARG BASE=python:3.11.14-slim\n" + t.split("\n", 1)[1],
        "DF002",
    ),
    "minor tag without digest": (
        lambda t: "ARG BASE=python:3.11-slim\n" + t.split("\n", 1)[1],
        "DF002",
    ),
    "single stage": (
        lambda t: (
            t.split("FROM base AS final\n", 1)[0]
            .replace("FROM ${BASE} AS base", "USER 10001\nHEALTHCHECK CMD true")
            .replace("FROM ${BASE} AS builder\n", "FROM ${BASE}\n")
        ),
        "DF001",
    ),
    "apt without --no-install-recommends": (
        lambda t: t.replace(" --no-install-recommends", ""),
        "DF005",
    ),
    "apt without -y": (lambda t: t.replace("install -y ", "install "), "DF005"),
    "apt lists kept": (
        lambda t: t.replace(" \\\n    && rm -rf /var/lib/apt/lists/*", ""),
        "DF005",
    ),
    "compiler in the final image": (
        lambda t: t.replace(
            "USER 10001:10001",
            "RUN apt-get update && apt-get install -y --no-install-recommends build-essential"
            " && rm -rf /var/lib/apt/lists/*\nUSER 10001:10001",
        ),
        "DF006",
    ),
    "secret ENV": (
        lambda t: t.replace("USER 10001:10001", "ENV SLACK_BOT_TOKEN=xoxb-1\nUSER 10001:10001"),
        "DF007",
    ),
    "secret ARG default": (lambda t: "ARG DB_PASSWORD=hunter2\n" + t, "DF007"),
    "legacy ENV secret": (
        lambda t: t.replace("USER 10001:10001", "ENV API_KEY abc\nUSER 10001:10001"),
        "DF007",
    ),
}


@pytest.fixture(scope="module")
def dockerfile_text() -> str:
    return (REPO / "Dockerfile").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def dockerfile(dockerfile_text: str) -> c.Dockerfile:
    return c.parse_dockerfile(dockerfile_text)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = c.load_yaml(REPO / "docker-compose.yml")
    assert isinstance(doc, dict)
    return doc


# ------------------------------------------------------------------------------ Dockerfile


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    assert c.hadolint_findings(REPO / "Dockerfile") == []


def test_hadolint_catches_a_broken_dockerfile(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text(
        'FROM python:latest\nRUN apt-get update && apt-get install -y curl\nCMD ["python"]\n',
        encoding="utf-8",
    )
    codes = {finding.rule for finding in c.hadolint_findings(broken)}
    assert {"DL3007", "DL3008", "DL3009", "DL3015"} <= codes


def test_the_dockerfile_holds_to_the_policy(dockerfile_text: str) -> None:
    assert c.dockerfile_findings(dockerfile_text) == []


def test_the_policy_fixture_is_clean_so_each_broken_copy_fails_for_its_own_reason() -> None:
    assert c.dockerfile_findings(GOOD_DOCKERFILE) == []


@pytest.mark.parametrize("case", sorted(BROKEN_DOCKERFILES))
def test_the_policy_catches_a_broken_dockerfile(case: str) -> None:
    mutate, rule = BROKEN_DOCKERFILES[case]
    broken = mutate(GOOD_DOCKERFILE)
    assert broken != GOOD_DOCKERFILE
    rules = {finding.rule for finding in c.dockerfile_findings(broken)}
    assert rule in rules, (case, c.dockerfile_findings(broken))


def _exec_form(value: str) -> list[str]:
    words = json.loads(value[value.index("[") :])
    assert isinstance(words, list)
    return [str(w) for w in words]


def test_the_worker_image_runs_the_worker_as_uid_10001_with_its_data_on_a_volume(
    dockerfile: c.Dockerfile,
) -> None:
    worker = dockerfile.stage(None)
    assert worker is not None and worker.name == "worker"  # the default target
    entrypoint = dockerfile.effective(worker, "ENTRYPOINT")
    cmd = dockerfile.effective(worker, "CMD")
    assert entrypoint is not None and cmd is not None
    assert _exec_form(entrypoint.value) + _exec_form(cmd.value) == [
        "faust", "-A", "app", "worker", "-l", "info"
    ]  # fmt: skip
    user = dockerfile.effective(worker, "USER")
    assert user is not None and user.value == "10001:10001"
    expose = dockerfile.effective(worker, "EXPOSE")
    assert expose is not None and expose.value == "6066"
    env = dockerfile.env(worker)
    assert env["FRAUD_WEB_PORT"] == "6066" and env["FRAUD_WEB_BIND"] == "0.0.0.0"
    volume = dockerfile.effective(worker, "VOLUME")
    assert volume is not None
    assert env["FRAUD_DATADIR"] in _exec_form(volume.value)
    assert env["FRAUD_ARCHIVE_URL"] in _exec_form(volume.value)
    runs = " ".join(
        i.value for s in dockerfile.chain(worker) for i in s.instructions if i.keyword == "RUN"
    )
    assert "--uid 10001" in runs and "chown -R 10001:10001 /var/lib/fraud-detection" in runs
    assert env["FRAUD_DATADIR"].startswith("/var/lib/fraud-detection/")
    # No stage but the builder installs anything with apt; every stage starts from one pin.
    bases = {s.base for s in dockerfile.stages if not dockerfile.is_stage(s.base, s.index)}
    assert len(bases) == 1 and next(iter(bases)).startswith("python:3.11.")
    assert [s.name for s in dockerfile.stages] == ["builder", "base", "tools", "worker"]


def test_the_tools_target_carries_infra_local_and_the_lambda_extra(
    dockerfile: c.Dockerfile,
) -> None:
    tools = dockerfile.stage("tools")
    assert tools is not None
    values = [(i.keyword, i.value) for i in tools.instructions]
    assert ("COPY", "infra/local ./infra/local") in values
    assert ("COPY", "infra/__init__.py ./infra/") in values
    assert any(k == "RUN" and '"fraud-detection[lambda]"' in v for k, v in values)
    assert dockerfile.effective(tools, "USER") is not None
    workdir = dockerfile.effective(tools, "WORKDIR")
    assert workdir is not None and workdir.value == "/srv/fraud-detection"
    # pip resolves nothing from PyPI in the runtime stages: only the locked wheels.
    for stage in dockerfile.stages[1:]:
        for instruction in stage.instructions:
            if instruction.keyword == "RUN" and "pip install" in instruction.value:
                assert "--no-index" in instruction.value
                assert "-c /wheels/requirements.lock" in instruction.value


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        _Health.status = 200


def test_the_healthcheck_passes_on_200_and_fails_on_503_or_no_answer(
    dockerfile: c.Dockerfile, health_server: ThreadingHTTPServer
) -> None:
    worker = dockerfile.stage(None)
    assert worker is not None
    health = dockerfile.effective(worker, "HEALTHCHECK")
    assert health is not None
    argv = _exec_form(health.value)
    assert argv[:2] == ["python", "-c"]  # urllib: the slim image has no curl

    def probe(port: int) -> int:
        env = {**os.environ, "FRAUD_WEB_PORT": str(port)}
        return subprocess.run(
            [sys.executable, "-c", argv[2]], env=env, capture_output=True, timeout=30, check=False
        ).returncode

    port = health_server.server_address[1]
    assert isinstance(port, int)
    assert probe(port) == 0
    _Health.status = 503
    assert probe(port) != 0
    health_server.shutdown()
    health_server.server_close()
    assert probe(port) != 0


# ------------------------------------------------------------------------------ compose


def test_the_schema_file_is_the_vendored_one() -> None:
    assert c.schema_sha256() == c.COMPOSE_SCHEMA_SHA256, c.COMPOSE_SCHEMA_SOURCE


def test_the_compose_file_is_valid_against_the_compose_specification(
    compose: dict[str, Any],
) -> None:
    assert c.compose_schema_findings(compose) == []


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        ("servces: {app: {image: 'x:1'}}", "'servces' does not match"),
        ("services: {app: {image: 'x:1', restrat: always}}", "'restrat' was unexpected"),
        ("services: {app: {image: 'x:1', depends_on: {db: {condition: up}}}}", "not valid under"),
        ("services: {app: {image: 'x:1', healthcheck: {interval: 5}}}", "5 is not of type"),
        ("services: {app: {image: 'x:1', ports: [{target: 80, bogus: 1}]}}", "not valid under"),
    ],
)
def test_the_schema_catches_a_broken_compose_file(broken: str, expected: str) -> None:
    findings = c.compose_schema_findings(yaml.safe_load(broken))
    assert any(expected in f.message for f in findings), findings


def test_the_compose_file_holds_to_the_checks(
    compose: dict[str, Any], dockerfile: c.Dockerfile
) -> None:
    assert c.compose_findings(compose, dockerfile) == []


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(doc: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node = doc
        for key in parents:
            node = node[key]
        if value is None:
            del node[last]
        else:
            node[last] = value

    return apply


BROKEN_COMPOSE: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "latest image": (_set("services/dynamodb/image", "amazon/dynamodb-local:latest"), "CP001"),
    "untagged image": (_set("services/dynamodb/image", "amazon/dynamodb-local"), "CP001"),
    "image without digest": (_set("services/kafka/image", "apache/kafka:3.9.2"), "CP001"),
    "built image tagged latest": (_set("services/worker-1/image", "fraud:latest"), "CP001"),
    "port on every interface": (_set("services/kafka/ports", ["9092:19092"]), "CP002"),
    "port on 0.0.0.0": (_set("services/dynamodb/ports", ["0.0.0.0:8000:8000"]), "CP002"),
    "long-syntax port without host_ip": (
        _set("services/dynamodb/ports", [{"target": 8000, "published": "8000"}]),
        "CP002",
    ),
    "host network": (_set("services/worker-1/network_mode", "host"), "CP003"),
    "network of a missing service": (
        _set("services/notifier/network_mode", "service:slack"),
        "CP003",
    ),
    "privileged": (_set("services/init/privileged", True), "CP003"),
    "depends on a missing service": (
        _set("services/worker-1/depends_on/zookeeper", {"condition": "service_started"}),
        "CP004",
    ),
    "waits for health that is never reported": (_set("services/kafka/healthcheck", None), "CP004"),
    "waits for a one-shot that restarts forever": (
        _set("services/init/restart", "unless-stopped"),
        "CP004",
    ),
    "undeclared volume": (_set("volumes/archive", None), "CP005"),
    "workers share a data volume": (
        _set(
            "services/worker-2/volumes",
            ["worker-1-data:/var/lib/fraud-detection/worker"],
        ),
        "CP006",
    ),
    "worker without a data volume": (_set("services/worker-2/volumes", None), "CP006"),
    "workers share a host port": (
        _set("services/worker-2/ports", ["127.0.0.1:6066:6066"]),
        "CP006",
    ),
    "worker without FRAUD_WEB_HOST": (
        _set("services/worker-2/environment/FRAUD_WEB_HOST", None),
        "CP006",
    ),
    "workers share FRAUD_WEB_HOST": (
        _set("services/worker-2/environment/FRAUD_WEB_HOST", "worker-1"),
        "CP006",
    ),
    "worker bound to loopback": (
        _set("services/worker-1/environment/FRAUD_WEB_BIND", "127.0.0.1"),
        "CP006",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_COMPOSE))
def test_the_checks_catch_a_broken_compose_file(
    case: str, compose: dict[str, Any], dockerfile: c.Dockerfile
) -> None:
    mutate, rule = BROKEN_COMPOSE[case]
    broken = copy.deepcopy(compose)
    mutate(broken)
    rules = {finding.rule for finding in c.compose_findings(broken, dockerfile)}
    assert rule in rules, (case, c.compose_findings(broken, dockerfile))


def test_the_stack_runs_two_workers_and_the_notifier_on_pinned_images(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert c.workers(compose) == ["worker-1", "worker-2"]
    assert services["kafka"]["image"].startswith("apache/kafka:3.9.")
    assert services["dynamodb"]["image"].startswith("amazon/dynamodb-local:")
    for name in ("worker-1", "worker-2", "notifier"):
        conditions = c.dependencies(services[name]["depends_on"])
        assert conditions.get("init") == "service_completed_successfully", name
    for name in ("worker-1", "worker-2", "init"):
        conditions = c.dependencies(services[name]["depends_on"])
        assert conditions["kafka"] == conditions["dynamodb"] == "service_healthy", name
    for name, service in services.items():
        if "build" in service:
            assert service.get("read_only") is True and service.get("cap_drop") == ["ALL"], name


def test_the_notifier_command_is_one_the_poller_accepts(compose: dict[str, Any]) -> None:
    from infra.local.stream_poller import build_parser  # noqa: PLC0415

    notifier = compose["services"]["notifier"]
    command = notifier["command"]
    assert command[:3] == ["python", "-m", "infra.local.stream_poller"]
    args = build_parser().parse_args(command[3:])
    assert args.endpoint == "http://dynamodb:8000" and args.table == "fraud_alerts"
    assert args.create_idempotency_table and notifier["environment"]["IDEMPOTENCY_TABLE"]
    # The local Slack listens on 127.0.0.1 in the namespace the notifier shares.
    receiver = compose["services"]["slack-receiver"]
    assert notifier["network_mode"] == "service:slack-receiver"
    port = receiver["command"][receiver["command"].index("--port") + 1]
    assert f"http://127.0.0.1:{port}/" in notifier["environment"]["SLACK_WEBHOOK_URL"]
    importlib.import_module(receiver["command"][2])


def test_the_init_script_compiles_and_what_it_uses_exists(compose: dict[str, Any]) -> None:
    from infra.local.stack import LocalStack  # noqa: PLC0415

    command = compose["services"]["init"]["command"]
    assert command[:2] == ["python", "-c"]
    code = command[2]
    assert "$" not in code  # compose would interpolate it
    tree = ast.parse(code, "<init>")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), (node.module, alias.name)
    compile(code, "<init>", "exec")
    assert isinstance(LocalStack.__dict__["dynamodb_endpoint"], property)
    assert isinstance(LocalStack.__dict__["bootstrap"], property)
    assert callable(LocalStack.provision)
    assert (files("app.rules_admin") / "default_rules.yaml").is_file()


# ------------------------------------------------------------------------------ .dockerignore


def test_the_build_context_has_what_the_dockerfile_copies_and_nothing_private(
    dockerfile: c.Dockerfile,
) -> None:
    text = (REPO / ".dockerignore").read_text(encoding="utf-8")
    assert c.dockerignore_findings(text, dockerfile) == []


def test_the_dockerignore_check_catches_a_leaky_or_a_starving_context(
    dockerfile: c.Dockerfile,
) -> None:
    leaky = {f.rule + " " + f.message for f in c.dockerignore_findings(".git\n", dockerfile)}
    assert any(m.startswith("DI002 .venv/") for m in leaky)
    assert not any(m.startswith("DI002 .git/") for m in leaky)
    good = (REPO / ".dockerignore").read_text(encoding="utf-8")
    starving = c.dockerignore_findings(good + "lambdas/\n", dockerfile)
    assert [f.rule for f in starving] == ["DI001"]
    assert "lambdas" in starving[0].message


def test_dockerignore_matching_follows_docker() -> None:
    patterns = c.dockerignore_patterns("*\n!app/\n**/__pycache__\n!infra/__init__.py\n")
    assert c.is_excluded("README.md", patterns)
    assert not c.is_excluded("app/web/routes.py", patterns)
    assert c.is_excluded("app/web/__pycache__/routes.cpython-311.pyc", patterns)
    assert c.is_excluded("__pycache__/x.pyc", patterns)
    assert not c.is_excluded("infra/__init__.py", patterns)
    assert c.is_excluded("infra/terraform/main.tf", patterns)


# ------------------------------------------------------------------------------ the lock


def test_the_lock_pins_everything_once_and_agrees_with_setup_cfg() -> None:
    lock = (REPO / "requirements.lock").read_text(encoding="utf-8")
    assert c.lock_findings(lock) == []
    # The image installs install_requires and the `lambda` extra, nothing from `dev`.
    assert "pytest==" not in lock and "slack-sdk==" in lock


def test_the_lock_check_catches_drift_and_loose_lines() -> None:
    lock = (REPO / "requirements.lock").read_text(encoding="utf-8")
    drifted = lock.replace("faust-streaming==0.15.3", "faust-streaming==0.15.2")
    assert drifted != lock
    assert [f.rule for f in c.lock_findings(drifted)] == ["LK002"]
    loose = lock.replace("aiohttp==3.14.5", "aiohttp>=3")
    assert loose != lock
    assert [f.rule for f in c.lock_findings(loose)] == ["LK001"]
    unsorted = "\n".join(reversed(lock.splitlines()))
    assert "LK001" in {f.rule for f in c.lock_findings(unsorted)}


def test_the_whole_check_command_passes() -> None:
    assert c.main(["check"]) == 0

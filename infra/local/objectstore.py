"""A real S3-compatible server on 127.0.0.1 for tests: Versity's S3 gateway (versitygw).

    with LocalS3() as s3:
        s3.create_bucket("fraud-archive")
        Archive.at("s3://fraud-archive/prefix", endpoint=s3.endpoint, region=s3.region)

Why a real server rather than moto: the archive talks to S3 through pyarrow's C++ client
(multipart uploads, paged listings, ranged reads), which only a real S3 implementation
answers the way AWS does. versitygw is one Go binary serving a plain directory
(``posix`` backend), starts in well under a second and binds loopback only; it is built
once from the Go module proxy into the same cache as the rest of the local stack.

The gateway runs in its own process group with PDEATHSIG, so it dies with the test process
even when that is SIGKILLed; ``stop()`` (the context exit) ends the group and removes the
data directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import logging
import os
import random
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

import boto3

from infra.local.stack import cache_dir, group_members

log = logging.getLogger("infra.local.objectstore")

VERSITYGW_VERSION = "v1.8.0"
VERSITYGW_PACKAGE = "github.com/versity/versitygw/cmd/versitygw"
GO_FALLBACK = "/usr/local/go/bin/go"  # the official tarball's place, often not on PATH
BUILD_TIMEOUT_S = 900.0
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
PORT_ATTEMPTS = 3
# Not a valid bucket name (underscores), so it cannot shadow a bucket.
HEALTH_PATH = "/_local_s3_health"
REGION = "us-east-1"  # versitygw's default region; the SigV4 scope must match it

_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded now: the preexec hook must not import
_PR_SET_PDEATHSIG = 1


def versitygw_dir() -> Path:
    """Where the binary lives: versioned, so a version bump builds afresh."""
    return cache_dir() / f"versitygw-{VERSITYGW_VERSION}"


def _go() -> str:
    found = shutil.which("go") or (GO_FALLBACK if os.access(GO_FALLBACK, os.X_OK) else None)
    if found is None:
        raise RuntimeError(
            f"building versitygw needs Go: `go install {VERSITYGW_PACKAGE}@{VERSITYGW_VERSION}`"
            f" found neither `go` on PATH nor {GO_FALLBACK}"
        )
    return found


def ensure_versitygw() -> Path:
    """The versitygw binary, built with ``go install`` on first use (one to three minutes,
    network for the module proxy); later calls only check that it is there.

    The build goes to a scratch directory renamed into place, so an interrupted build is
    redone rather than half-used; concurrent first builds both succeed and one rename wins.
    """
    binary = versitygw_dir() / "versitygw"
    if os.access(binary, os.X_OK):
        return binary
    go = _go()
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".versitygw-", dir=root))
    argv = [go, "install", f"{VERSITYGW_PACKAGE}@{VERSITYGW_VERSION}"]
    command = f"GOBIN={scratch} {shlex.join(argv)}"
    log.info("building versitygw %s (once; cached in %s)", VERSITYGW_VERSION, binary.parent)
    try:
        try:
            done = subprocess.run(
                argv,
                env={**os.environ, "GOBIN": str(scratch)},
                cwd=scratch,  # outside any module: `go install pkg@version` ignores go.mod
                check=False,
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT_S,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeError(f"`{command}` failed: {exc}") from exc
        if done.returncode != 0 or not (scratch / "versitygw").exists():
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
            raise RuntimeError(f"`{command}` failed (exit {done.returncode}):\n{tail}")
        if not os.access(binary, os.X_OK):  # another process may have finished first
            shutil.rmtree(binary.parent, ignore_errors=True)
            with contextlib.suppress(OSError):
                scratch.chmod(0o755)  # mkdtemp made it private
                scratch.rename(binary.parent)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if not os.access(binary, os.X_OK):
        raise RuntimeError(f"`{command}` succeeded but {binary} is not there")
    return binary


def _die_with_parent() -> None:
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _pick_port() -> int:
    # Below the kernel's ephemeral range, so an outgoing connection cannot take the port
    # between this probe and the gateway's bind.
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port))
            return port
    raise RuntimeError("no free TCP port on 127.0.0.1")


def _answers(url: str) -> bool:
    """Whether a versitygw answers ``url`` (its health path) with 200.

    An open port is not enough: another process may hold it, and the gateway would then
    exit while we talk to the other one. No proxy, whatever the environment says.
    """
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=1.0) as response:
            return bool(response.status == 200 and response.headers.get("Server") == "VERSITYGW")
    except (OSError, http.client.HTTPException):  # URLError is an OSError
        return False


class LocalS3:
    """One versitygw on 127.0.0.1 serving a fresh temporary directory; see the module doc.

    Start it from a thread that outlives it (the main thread, as pytest fixtures do):
    PDEATHSIG fires when the thread that forked the gateway exits, not only the process.
    Bucket names follow AWS rules (3 to 63 lowercase letters, digits, dots and hyphens): the
    gateway refuses ``InvalidBucketName`` otherwise. Credentials are random per instance.
    """

    region = REGION

    def __init__(self, *, access_key: str = "local-s3", secret_key: str | None = None) -> None:
        self.access_key = access_key
        self.secret_key = secret_key or secrets.token_hex(16)
        self.port = 0
        self.data_dir = Path()
        self.log_path = Path()
        self._temp: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The AWS variables that point an SDK's default credential chain at this server
        (pyarrow's S3FileSystem reads them; the endpoint is passed separately)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }

    def create_bucket(self, name: str) -> None:
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )
        client.create_bucket(Bucket=name)

    def start(self) -> None:
        binary = ensure_versitygw()
        self._temp = Path(tempfile.mkdtemp(prefix="local-s3-"))
        self.data_dir = self._temp / "data"
        self.data_dir.mkdir()
        self.log_path = self._temp / "versitygw.log"
        try:
            for attempt in range(1, PORT_ATTEMPTS + 1):
                self.port = _pick_port()
                self._spawn(binary)
                if self._wait_ready():
                    break
                # Lost the port between probing and binding: another try on another port.
                if attempt == PORT_ATTEMPTS:
                    raise self._fail(f"found no free port in {PORT_ATTEMPTS} attempts")
                self._proc = None
                self.log_path.write_bytes(b"")  # the next attempt's log starts clean
        except BaseException:
            self.stop()
            raise
        assert self._proc is not None
        log.debug("versitygw on %s, pid %d, data %s", self.endpoint, self._proc.pid, self.data_dir)

    def _spawn(self, binary: Path) -> None:
        argv = [
            str(binary),
            "--access",
            self.access_key,
            "--secret",
            self.secret_key,
            "--region",
            self.region,
            "--port",
            f"127.0.0.1:{self.port}",
            "--health",
            HEALTH_PATH,
            "posix",
            str(self.data_dir),
        ]
        with self.log_path.open("ab") as out:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: stop() ends all of it
                # The hook only calls preloaded libc (no import, no lock): safe after fork.
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )

    def _wait_ready(self) -> bool:
        """True once the gateway answers; False if it exited because its port was taken."""
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(self.endpoint + HEALTH_PATH):
            if self._proc.poll() is not None:
                with contextlib.suppress(OSError):
                    if "address already in use" in self.log_path.read_text(errors="replace"):
                        return False
                raise self._fail(f"exited with status {self._proc.returncode} while starting")
            if time.monotonic() > deadline:
                raise self._fail(f"did not answer on {self.endpoint} in {START_TIMEOUT_S:.0f} s")
            time.sleep(0.05)
        return True

    def _fail(self, what: str) -> RuntimeError:
        tail = ""
        with contextlib.suppress(OSError):
            lines = self.log_path.read_text(errors="replace").splitlines()[-15:]
            tail = "\n  " + "\n  ".join(lines) if lines else ""
        return RuntimeError(f"versitygw {what}; the end of its log:{tail}")

    def _signal(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def _gone(self) -> bool:
        assert self._proc is not None
        return self._proc.poll() is not None and not group_members([self._proc.pid])

    def stop(self) -> None:
        """SIGTERM to the group, SIGKILL after STOP_TIMEOUT_S; then remove the data."""
        if self._proc is not None:
            self._signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while not self._gone() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not self._gone():
                log.warning("versitygw did not stop within %.0f s; killing it", STOP_TIMEOUT_S)
                self._signal(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=5)
            self._proc = None
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None

    def __enter__(self) -> LocalS3:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

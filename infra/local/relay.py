"""Runs a server inside a private network namespace and relays one host loopback port to it.

DynamoDB Local always binds every interface, so it must never run in the host's network
namespace. `stack.py` binds 127.0.0.1:PORT in the host namespace and hands the listening socket
to this script through `unshare -rn`; a socket keeps the namespace it was created in, so the
relay accepts on the host loopback while its outgoing connections (and the server it starts)
live in the new, empty namespace. One process, one hop, no socket file to clean up.

Standard library only: it is started by file path with `python -I`, outside the project venv's
import path.

    python relay.py --listen-fd FD --target-port P -- java -jar DynamoDBLocal.jar ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import struct
import sys
from collections.abc import Sequence
from typing import Any

_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_CHUNK = 1 << 16


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when the thread that forked it exits."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def loopback_up() -> None:
    """Bring `lo` up in a fresh network namespace (where it starts down) without needing `ip`."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, _SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))


async def _pipe(
    src: asyncio.StreamReader, dst: asyncio.StreamWriter, src_writer: asyncio.StreamWriter
) -> None:
    try:
        while data := await src.read(_CHUNK):
            dst.write(data)
            await dst.drain()
        # Half-close: forward the EOF but keep the other direction open for the reply.
        if dst.can_write_eof():
            dst.write_eof()
        else:
            dst.close()
    except (OSError, RuntimeError):
        # A reset on either side ends the whole connection; a dangling direction would leak.
        dst.transport.abort()
        src_writer.transport.abort()


async def _serve(
    target_port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        up_reader, up_writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", target_port), timeout=5
        )
    except (OSError, TimeoutError):
        # Server not up (yet): closing tells the client to retry, like a refused connection.
        writer.transport.abort()
        return
    for w in (writer, up_writer):
        sock = w.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        await asyncio.gather(_pipe(reader, up_writer, writer), _pipe(up_reader, writer, up_writer))
    finally:
        writer.close()
        up_writer.close()


async def _main(listen_fd: int, target_port: int, command: Sequence[str]) -> int:
    loop = asyncio.get_running_loop()
    # The server dies with us and we die with stack.py (pdeathsig): nothing outlives the stack.
    server = await asyncio.create_subprocess_exec(*command, preexec_fn=die_with_parent)
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stopping.set)
    relay = await asyncio.start_server(
        lambda r, w: _serve(target_port, r, w),
        sock=socket.socket(fileno=listen_fd),
        limit=_CHUNK,
        backlog=1024,
    )
    exited = asyncio.create_task(server.wait())
    stop_wait = asyncio.create_task(stopping.wait())
    either: set[asyncio.Future[Any]] = {exited, stop_wait}
    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    relay.close()
    if not exited.done():
        server.terminate()
        try:
            await asyncio.wait_for(asyncio.shield(exited), timeout=10)
        except TimeoutError:
            server.kill()
            await exited
    stop_wait.cancel()
    print(f"relay: server exited with code {server.returncode}", file=sys.stderr, flush=True)
    return 0 if stopping.is_set() else (server.returncode or 1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen-fd", type=int, required=True, help="inherited listening socket")
    parser.add_argument("--target-port", type=int, required=True, help="server port in the netns")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- server command line")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("a server command is required after --")
    die_with_parent()
    if os.getppid() == 1:  # parent already gone before pdeathsig was armed
        return 1
    loopback_up()
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_main(args.listen_fd, args.target_port, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())

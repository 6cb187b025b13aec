"""Real ``statecast serve`` processes on one Redis: start, stop, kill, pause and resume by PID."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from tests.helpers import ONE_HOST_FLAGS, SCALE
from tests.redis_server import free_port

#: What the cluster tests run every node with: a 1 s lease (failover within a test's
#: patience), a rate limit no test actor reaches, and no per-identity quotas (every actor
#: comes from 127.0.0.1).
CLUSTER_FLAGS = (
    *ONE_HOST_FLAGS,
    "--lease-ttl",
    "1.0",
    "--log-level",
    "info",
    "--action-rate",
    "1000",
    "--action-burst",
    "1000",
)


class Node:
    """One server process; its log goes to a file the test can print when it fails."""

    def __init__(self, redis_url: str, name: str, *flags: str) -> None:
        self.name = name
        self.redis_url = redis_url
        self.flags = flags
        self.port = free_port()
        self.http_port = free_port()
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in close())
            prefix=f"statecast-{name}-", suffix=".log", delete=False
        )
        self.process: asyncio.subprocess.Process | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def room_url(self, room: str) -> str:
        return f"{self.ws_url}/rooms/{room}"

    async def start(self) -> None:
        args = [
            sys.executable,
            "-m",
            "statecast.server",
            "serve",
            "--store",
            self.redis_url,
            "--port",
            str(self.port),
            "--http-port",
            str(self.http_port),
            "--log-format",
            "json",
            "--no-uvloop",
            *self.flags,
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = await asyncio.create_subprocess_exec(
            *args, stdout=self.log, stderr=subprocess.STDOUT, env=env
        )
        deadline = asyncio.get_running_loop().time() + 20 * SCALE
        async with aiohttp.ClientSession() as session:
            while True:
                if self.process.returncode is not None:
                    raise RuntimeError(f"node {self.name} exited at start:\n{self.output()}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{self.http_url}/healthz") as response:
                        if response.status == 200:
                            return
                if asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError(f"node {self.name} not ready:\n{self.output()}")
                await asyncio.sleep(0.05)

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        os.kill(self.process.pid, sig)

    async def wait(self, timeout: float = 20.0) -> int:
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), timeout * SCALE)

    async def stop(self) -> None:
        """SIGTERM (graceful), then SIGKILL if it has not exited within its grace time."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)  # a paused node cannot handle SIGTERM
            os.kill(process.pid, signal.SIGTERM)
        try:
            await self.wait(15)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            await process.wait()

    def output(self) -> str:
        self.log.flush()
        with open(self.log.name, encoding="utf-8", errors="replace") as f:
            return f.read()[-6000:]

    def close(self) -> None:
        self.log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)

    async def get(self, path: str) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10 * SCALE)) as session,
            session.get(f"{self.http_url}{path}") as response,
        ):
            return response.status, await response.json(content_type=None)

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10 * SCALE)) as session,
            session.post(f"{self.http_url}{path}", json=body) as response,
        ):
            return response.status, await response.json(content_type=None)


@contextlib.asynccontextmanager
async def cluster(redis_url: str, count: int, *flags: str) -> AsyncIterator[list[Node]]:
    """``count`` nodes on one Redis, started together, stopped by PID after."""
    nodes = [Node(redis_url, f"n{i}", *flags) for i in range(count)]
    try:
        await asyncio.gather(*(node.start() for node in nodes))
        yield nodes
    except BaseException:
        for node in nodes:
            sys.stderr.write(f"--- {node.name} ---\n{node.output()}\n")
        raise
    finally:
        await asyncio.gather(*(node.stop() for node in nodes), return_exceptions=True)
        for node in nodes:
            node.close()


__all__ = ["CLUSTER_FLAGS", "Node", "cluster", "signal"]

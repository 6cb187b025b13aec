"""``statecast serve --workers N``: processes sharing the ports, restarted when they die."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys

import aiohttp

from tests.cluster_client import Roamer
from tests.helpers import SCALE, eventually
from tests.redis_server import RedisServer, free_port


async def pids_behind(url: str, want: int, exclude: frozenset[int] = frozenset()) -> set[int]:
    """Worker PIDs seen on fresh connections to ``url`` until ``want`` of them answer (each
    worker's /metrics names its process)."""
    seen: set[int] = set()
    async with asyncio.timeout(30 * SCALE):
        while len(seen - exclude) < want:
            connector = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(connector=connector) as session:
                try:
                    async with session.get(f"{url}/metrics") as response:
                        if response.status == 200:
                            text = await response.text()
                            match = re.search(r"^statecast_process_id (\S+)$", text, re.M)
                            assert match is not None, "no statecast_process_id in /metrics"
                            seen.add(int(float(match.group(1))))
                except aiohttp.ClientError:
                    pass
            await asyncio.sleep(0.01)
    return seen - exclude


async def test_workers_share_the_ports_and_a_dead_one_is_restarted(
    redis_server: RedisServer, redis_url: str
) -> None:
    """Two workers answer on one port pair; clients on either see one room; kill -9 of a
    worker brings a new one up while the other keeps serving."""
    port, http_port = free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "statecast.server", "serve", "--workers", "2",
        "--store", redis_url, "--port", str(port), "--http-port", str(http_port),
        "--lease-ttl", "1", "--log-level", "warning",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{http_port}"
    try:
        first = await pids_behind(url, 2)
        clients = [Roamer([f"ws://127.0.0.1:{port}/rooms/w"], client=f"a{i}") for i in range(4)]
        for c in clients:
            await c.start()
        for i, c in enumerate(clients):
            assert (await c.act("patch", [[0, [f"k{i}"], i]]))[0] == "ack"
        await eventually(lambda: all(c.seq == 4 for c in clients))
        assert all(c.sync.state == {f"k{i}": i for i in range(4)} for c in clients)
        for c in clients:
            await c.close()
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        await pids_behind(url, 2, exclude=frozenset({victim}))  # restarted: two again
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 40 * SCALE) == 0


def test_workers_need_a_shared_store() -> None:
    """--workers 2 with a store of one process's own is refused with its reason (exit 2)."""
    result = subprocess.run(
        [sys.executable, "-m", "statecast.server", "serve", "--workers", "2", "--store", "memory"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--workers above 1 needs a shared store" in result.stderr

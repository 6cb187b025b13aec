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


async def workers_behind(
    url: str, want: int, exclude: frozenset[int] = frozenset()
) -> dict[int, float]:
    """Each worker's agent connections, by PID, read from fresh connections to ``url``
    until ``want`` workers have answered (each worker's /metrics names its process)."""
    seen: dict[int, float] = {}
    async with asyncio.timeout(30 * SCALE):
        while len(seen.keys() - exclude) < want:
            connector = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(connector=connector) as session:
                try:
                    async with session.get(f"{url}/metrics") as response:
                        if response.status == 200:
                            text = await response.text()
                            pid = re.search(r"^statecast_process_id (\S+)$", text, re.M)
                            assert pid is not None, "no statecast_process_id in /metrics"
                            agents = re.search(
                                r'^statecast_connections\{role="agent"\} (\S+)$', text, re.M
                            )
                            seen[int(float(pid.group(1)))] = float(agents.group(1)) if agents else 0
                except aiohttp.ClientError:
                    pass
            await asyncio.sleep(0.01)
    return {pid: n for pid, n in seen.items() if pid not in exclude}


async def test_workers_share_the_ports_and_a_dead_one_is_restarted(
    redis_server: RedisServer, redis_url: str
) -> None:
    """Two workers answer on one port pair; clients spread over both see one room; kill -9
    of a worker: its clients resume elsewhere, the other worker's keep their connections
    and go on acting, and a new worker comes up."""
    port, http_port = free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "statecast.server", "serve", "--workers", "2",
        "--store", redis_url, "--port", str(port), "--http-port", str(http_port),
        "--lease-ttl", "1", "--log-level", "warning",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{http_port}"
    try:
        await workers_behind(url, 2)
        # 16 agents: the kernel spreads connections over the workers (all 16 on one of two
        # would happen once in 32,768 runs).
        clients = [Roamer([f"ws://127.0.0.1:{port}/rooms/w"], client=f"a{i}") for i in range(16)]
        for c in clients:
            await c.start()
        for i, c in enumerate(clients):
            assert (await c.act("patch", [[0, [f"k{i}"], i]]))[0] == "ack"
        await eventually(lambda: all(c.seq == 16 for c in clients))
        assert all(c.sync.state == {f"k{i}": i for i in range(16)} for c in clients)
        spread = await workers_behind(url, 2)
        assert sorted(spread.values()) != [0, 16] and sum(spread.values()) == 16, spread
        victim = min(spread)
        os.kill(victim, signal.SIGKILL)
        # Every agent acts again: the survivor's keep their connection, the victim's
        # reconnect (to the survivor or its replacement) and resume.
        for i, c in enumerate(clients):
            assert (await c.act("patch", [[0, [f"k{i}"], -1 - i]]))[0] == "ack"
        await eventually(lambda: all(c.seq == 32 for c in clients), 20 * SCALE)
        assert all(c.sync.state == {f"k{i}": -1 - i for i in range(16)} for c in clients)
        kept = [c for c in clients if c.connections == 1]
        moved = [c for c in clients if c.connections > 1]
        assert len(kept) == spread[max(spread)] and len(moved) == spread[victim]
        await workers_behind(url, 2, exclude=frozenset({victim}))  # restarted: two again
        for c in clients:
            await c.close()
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

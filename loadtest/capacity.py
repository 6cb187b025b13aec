"""What a big deployment meets first: many spectators in one room, many small rooms.

    python -m statecast.loadtest.capacity --spectators 5000 --rooms 10000

Starts ``statecast serve --store memory`` at its defaults (plus any ``--serve-arg``)
in a process of its own, then:

1. creates ``--rooms`` + 1 small rooms with one HTTP action each, and reports how many
   were accepted and the RSS per room; then reads back the first room's state;
2. joins ``--spectators`` spectators to one room, reports how many were accepted, the
   server's RSS per spectator, and how long one diff takes to reach all of them.

Bounded in count and time; the server is stopped at the end. Linux only (RSS from /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import Sequence

import aiohttp
import msgpack
import websockets
from websockets.asyncio.client import ClientConnection

from statecast.loadtest.runner import ONE_HOST

BATCH = 250


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    """A process's resident memory in MB, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def _spectator(stack: contextlib.AsyncExitStack, url: str) -> ClientConnection | int:
    """A joined spectator, or the close code that refused it."""
    ws = await stack.enter_async_context(
        websockets.connect(url, max_size=None, compression=None, max_queue=None)
    )
    await ws.send(msgpack.packb([1, {"v": 1, "role": "spectator"}]))
    try:
        await ws.recv()
    except websockets.ConnectionClosed:
        return ws.close_code or 1006
    return ws


async def _wait_ready(http: aiohttp.ClientSession, base: str) -> None:
    async with asyncio.timeout(30):
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{base}/healthz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)


async def run(spectators: int, rooms: int, concurrency: int, serve_args: Sequence[str]) -> None:
    ws_port, http_port = _free_port(), _free_port()
    command = [sys.executable, "-m", "statecast.server", "serve", "--store", "memory", *ONE_HOST]
    command += ["--port", str(ws_port), "--http-port", str(http_port), "--log-level", "error"]
    proc = await asyncio.create_subprocess_exec(
        *command, *serve_args, stdout=asyncio.subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{http_port}"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=50)) as http:
            await _wait_ready(http, base)
            start = rss_mb(proc.pid)
            print(f"server RSS at start: {start:.1f} MB")

            async def create(i: int) -> int:
                body = {"client": f"c{i}", "aid": 1, "name": "patch", "args": [[0, ["n"], i]]}
                async with http.post(f"{base}/rooms/small-{i}/actions", json=body) as resp:
                    return resp.status

            t0 = time.perf_counter()
            statuses: list[int] = []
            for first in range(0, rooms + 1, concurrency):
                last = min(first + concurrency, rooms + 1)
                statuses += await asyncio.gather(*(create(i) for i in range(first, last)))
            took = time.perf_counter() - t0
            ok = statuses.count(200)
            per = (rss_mb(proc.pid) - start) * 1024 / max(ok, 1)
            others = sorted({s for s in statuses if s != 200})
            print(
                f"rooms: {ok} of {rooms + 1} small rooms created in {took:.1f} s "
                f"(other statuses: {others}); {per:.1f} KB of server RSS each"
            )
            async with http.get(f"{base}/rooms/small-0/state") as resp:
                print(f"room small-0 read back: HTTP {resp.status} {await resp.text()}")
            start = rss_mb(proc.pid)
            async with contextlib.AsyncExitStack() as stack:
                t0 = time.perf_counter()
                joined: list[ClientConnection] = []
                refused: list[int] = []
                url = f"ws://127.0.0.1:{ws_port}/rooms/busy"
                # Spectators never create a room: an agent's (empty) action does.
                empty = {"client": "capacity", "aid": 1, "name": "patch", "args": []}
                async with http.post(f"{base}/rooms/busy/actions", json=empty) as resp:
                    resp.raise_for_status()
                for first in range(0, spectators, BATCH):
                    count = min(BATCH, spectators - first)
                    for result in await asyncio.gather(
                        *(_spectator(stack, url) for _ in range(count))
                    ):
                        if isinstance(result, int):
                            refused.append(result)
                        else:
                            joined.append(result)
                took = time.perf_counter() - t0
                per = (rss_mb(proc.pid) - start) * 1024 / max(len(joined), 1)
                print(
                    f"spectators: {len(joined)} joined one room, {len(refused)} refused "
                    f"{sorted(set(refused))} in {took:.1f} s; {per:.1f} KB of server RSS each"
                )
                if joined:
                    t0 = time.perf_counter()
                    body = {"client": "a", "aid": 1, "name": "patch", "args": [[0, ["n"], 1]]}
                    async with http.post(f"{base}/rooms/busy/actions", json=body) as resp:
                        resp.raise_for_status()
                    async with asyncio.timeout(60):
                        await asyncio.gather(*(ws.recv() for ws in joined))
                    took = (time.perf_counter() - t0) * 1000
                    print(f"one diff reached all {len(joined)} spectators in {took:.0f} ms")
    finally:
        proc.terminate()
        async with asyncio.timeout(30):
            await proc.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m statecast.loadtest.capacity")
    parser.add_argument("--spectators", type=int, default=5000, help="spectators in one room")
    parser.add_argument("--rooms", type=int, default=10000, help="small rooms (one more is tried)")
    parser.add_argument("--concurrency", type=int, default=500, help="rooms created at once")
    parser.add_argument(
        "--serve-arg", action="append", default=[], help="extra `statecast serve` argument"
    )
    args = parser.parse_args(argv)
    asyncio.run(run(args.spectators, args.rooms, args.concurrency, args.serve_arg))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

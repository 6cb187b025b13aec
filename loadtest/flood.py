"""``python -m statecast.loadtest.flood``: what one anonymous client can cost a server.

Starts ``statecast serve`` at its defaults (SQLite in a temporary folder, ``--auth
none``, loopback) in a process of its own and floods it from this one, as a single
address: new rooms as fast as it can, actions under rotating client ids, many
connections, state grown with large patches. Every loop is bounded in count and
time. It prints what got through, what was refused and why, and the server's RSS
and database size before and after, so the per-identity quotas (docs/operations.md)
can be read as figures. The flood and the server share the machine's cores: the
rates it reaches are generator-bound on a small machine; the counts refused are not.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import websockets

from statecast.loadtest.capacity import rss_mb

_TASKS: set[asyncio.Task[None]] = set()


async def _start(folder: str, flags: list[str]) -> tuple[asyncio.subprocess.Process, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "statecast.server", "serve", "--port", "0", "--http-port", "0",
        "--store", f"sqlite:{folder}/flood.db", "--log-format", "json",
        *flags,
        stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stderr is not None
    async with asyncio.timeout(30):
        async for raw in proc.stderr:
            with contextlib.suppress(ValueError):
                line = json.loads(raw)
                if line.get("event") == "serving":
                    ws = str(line["ws"]).removesuffix("/rooms/{room}")
                    task = asyncio.create_task(_drain(proc.stderr))
                    _TASKS.add(task)
                    task.add_done_callback(_TASKS.discard)
                    return proc, ws, str(line["http"])
    raise RuntimeError("statecast serve did not start")


async def _drain(stream: asyncio.StreamReader) -> None:
    async for _ in stream:
        pass


async def _post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, str]:
    async with http.post(url, json=body) as resp:
        answer = await resp.json()
        return resp.status, str(answer.get("message", "")) if resp.status != 200 else ""


def _tally(results: list[tuple[int, str]]) -> str:
    counts = collections.Counter(status for status, _ in results)
    reasons = {m.split(" (")[1].split(")")[0] for _, m in results if " (--" in m}
    refused = f", refused by {', '.join(sorted(reasons))}" if reasons else ""
    return ", ".join(f"{n} x {s}" for s, n in sorted(counts.items())) + refused


async def flood(seconds: float, flags: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="statecast-flood-") as folder:
        proc, ws_url, http_url = await _start(folder, flags)
        db = Path(folder) / "flood.db"
        try:
            rss0, db0 = rss_mb(proc.pid), db.stat().st_size / 1e6
            print(f"server at start: RSS {rss0:.0f} MB, database {db0:.1f} MB")
            async with aiohttp.ClientSession() as http:
                # 1. New rooms, as fast as one client can ask.
                results: list[tuple[int, str]] = []
                t0 = time.monotonic()
                while time.monotonic() - t0 < seconds and len(results) < 3000:
                    body = {"client": "c", "aid": 1, "name": "patch", "args": []}
                    url = f"{http_url}/rooms/flood-{len(results)}/actions"
                    results.append(await _post(http, url, body))
                print(f"new rooms for {seconds:g} s: {_tally(results)}")
                # 2. Actions under a new client id each.
                t0, results = time.monotonic(), []
                while time.monotonic() - t0 < seconds and len(results) < 3000:
                    body = {"client": f"id-{len(results)}", "aid": 1, "name": "patch", "args": []}
                    results.append(await _post(http, f"{http_url}/rooms/flood-0/actions", body))
                print(f"rotating client ids for {seconds:g} s: {_tally(results)}")
                # 3. State grown with 512 KiB patches in the rooms it could create.
                blob, results, grown = "x" * (512 << 10), [], 0
                t0 = time.monotonic()
                while time.monotonic() - t0 < seconds and len(results) < 400:
                    i = len(results)
                    room, key = f"flood-{i // 16}", f"k{i % 16}"
                    body = {"client": f"g{i}", "aid": 1, "name": "patch",
                            "args": [[0, [key], blob]]}  # fmt: skip
                    results.append(await _post(http, f"{http_url}/rooms/{room}/actions", body))
                    grown += len(blob) if results[-1][0] == 200 else 0
                print(f"512 KiB patches for {seconds:g} s: {_tally(results)}; "
                      f"{grown / 1e6:.0f} MB of state written")  # fmt: skip
            # 4. Connections held at once.
            held: list[Any] = []
            closes: collections.Counter[str] = collections.Counter()
            async with contextlib.AsyncExitStack() as stack:
                for _ in range(300):
                    conn = await stack.enter_async_context(
                        websockets.connect(f"{ws_url}/rooms/flood-0", max_size=None)
                    )
                    await conn.send(msgpack.packb([1, {"v": 1, "role": "spectator"}]))
                    try:
                        await asyncio.wait_for(conn.recv(), 5)
                        held.append(conn)
                    except websockets.ConnectionClosed as exc:
                        closes[f"{exc.rcvd.code if exc.rcvd else '?'}"] += 1
                print(f"connections: {len(held)} held, closed: {dict(closes) or 'none'}")
            await asyncio.sleep(1.5)  # one reading of the store's size
            rss1, db1 = rss_mb(proc.pid), db.stat().st_size / 1e6
            print(f"server after: RSS {rss1:.0f} MB (+{rss1 - rss0:.0f}), "
                  f"database {db1:.1f} MB (+{db1 - db0:.1f})")  # fmt: skip
        finally:
            proc.terminate()
            await proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m statecast.loadtest.flood", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each flood")
    parser.add_argument("serve_flags", nargs="*", help="flags for statecast serve (after --)")
    args = parser.parse_args()
    os.environ.pop("STATECAST_STORE", None)
    asyncio.run(flood(args.seconds, args.serve_flags))


if __name__ == "__main__":
    main()

"""``statecast bench-actions``: acknowledged actions per second, per store and durability.

Closed-loop agents: each sends one ``patch``, waits for its ACK, and sends the
next, so the figure is what the server acknowledges, commits included. The
agents are spread over ``--rooms`` rooms, which shows whether commits are
grouped across rooms (they are, in the SQLite store) or serialize room by room.
The server runs in its own process, started with ``statecast serve``; the
agents run in this one, so on a small machine both share the cores: compare
configurations measured in one run, as ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import websockets
from rich.console import Console
from rich.table import Table

from statecast.loadtest.cli import _list, bounded, shown
from statecast.loadtest.runner import Target
from statecast.protocol import codec
from statecast.protocol.messages import Ack, Action, Error, Hello


@dataclass
class Result:
    store: str
    durability: str
    rooms: int
    agents: int
    actions_per_s: float
    ack_p50_ms: float
    ack_p99_ms: float
    server_cpu_s: float


async def _agent(url: str, client: str, start: float, end: float, latencies: list[float]) -> int:
    """Act in a closed loop until ``end``; return the actions acknowledged after ``start``."""
    done = 0
    async with websockets.connect(url, max_size=None, compression=None) as ws:
        await ws.send(codec.encode(Hello(v=1, role="agent", client=client)))
        aid = 0
        while (now := time.perf_counter()) < end:
            aid += 1
            await ws.send(codec.encode(Action(aid, "patch", [[0, [client], aid]])))
            acked = False
            while not acked:
                frame = await ws.recv()
                assert isinstance(frame, bytes)
                for message in codec.decode_server_frame(frame):
                    if isinstance(message, Error) and message.aid == aid:
                        raise RuntimeError(f"action refused: {message.code} {message.message}")
                    acked = isinstance(message, Ack) and message.aid == aid
            if now >= start:
                done += 1
                latencies.append(time.perf_counter() - now)
    return done


async def measure(
    store: str, durability: str, rooms: int, agents: int, duration: float, warmup: float
) -> Result:
    target = Target()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:{tmp}/bench.db" if store == "sqlite" else store
        prefix = f"r{secrets.token_hex(4)}-"  # a Redis keeps rooms between configurations
        await target.start_statecast(
            ["--store", url, "--durability", durability, "--action-rate", "0"]
        )
        try:
            latencies: list[float] = []
            t0 = time.perf_counter()
            start, end = t0 + warmup, t0 + warmup + duration
            cpu_before: Any = None
            runs = [
                _agent(f"{target.ws_url}/rooms/{prefix}{i % rooms}", f"a{i}", start, end, latencies)
                for i in range(agents)
            ]
            gathered = asyncio.gather(*runs)
            await asyncio.sleep(max(0.0, start - time.perf_counter()))
            cpu_before = target.sample()
            counts = await gathered
            cpu_after = target.sample()
        finally:
            await target.stop()
    cpu = 0.0
    if cpu_before is not None and cpu_after is not None:
        cpu = cpu_after.cpu - cpu_before.cpu
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0
    return Result(
        store=store,
        durability=durability,
        rooms=rooms,
        agents=agents,
        actions_per_s=sum(counts) / duration,
        ack_p50_ms=statistics.median(latencies) * 1000 if latencies else 0.0,
        ack_p99_ms=p99 * 1000,
        server_cpu_s=cpu,
    )


async def run(args: argparse.Namespace, console: Console) -> list[Result]:
    results = []
    for rooms in args.rooms:
        for store in args.stores:
            for durability in args.durability if store == "sqlite" else ["ack"]:
                console.print(f"{store} {durability} rooms={rooms} agents={args.agents} …")
                results.append(
                    await measure(store, durability, rooms, args.agents, args.duration, args.warmup)
                )
    return results


def _csv(kind: Any, low: float | None = None) -> Any:
    return _list(kind, low=low)


def _main(args: argparse.Namespace) -> int:
    console = Console()
    if not console.is_terminal:
        console = Console(width=140)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    results = asyncio.run(run(args, console))
    table = Table(title="acknowledged actions (closed loop)")
    for col in ("store", "durability", "rooms", "agents", "actions/s", "ACK p50 ms", "ACK p99 ms"):
        table.add_column(col, justify="right")
    table.add_column("server CPU s / 1k actions", justify="right")
    for r in results:
        per_k = r.server_cpu_s / (r.actions_per_s * args.duration) * 1000 if r.actions_per_s else 0
        table.add_row(
            r.store,
            r.durability,
            str(r.rooms),
            str(r.agents),
            f"{r.actions_per_s:,.0f}",
            f"{r.ack_p50_ms:.2f}",
            f"{r.ack_p99_ms:.2f}",
            f"{per_k:.3f}",
        )
    console.print(table)
    return 0


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "bench-actions",
        help="acknowledged actions per second by store, durability and rooms",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    def a(flag: str, kind: Any, default: Any, help: str) -> None:
        text = f"{help} (default: {shown(default)})"
        parser.add_argument(flag, type=kind, default=default, help=text)

    a(
        "--stores",
        _csv(str),
        ["memory", "sqlite"],
        "stores to measure: memory, sqlite, redis://HOST:PORT/DB (a running Redis)",
    )
    a("--durability", _csv(str), ["ack", "async"], "durability modes (for sqlite): ack, async")
    a("--rooms", _csv(int, 1), [1, 20, 100], "rooms the agents are spread over (list)")
    a("--agents", bounded(int, low=1), 100, "closed-loop agents")
    a("--duration", bounded(float, above=0), 5.0, "seconds measured per configuration")
    a("--warmup", bounded(float, low=0), 1.0, "seconds before measuring")
    parser.set_defaults(func=_main)

"""``statecast bench-actions``: acknowledged actions per second, per store and durability.

Closed-loop agents: each sends one ``patch``, waits for its ACK, and sends the
next, so the figure is what the server acknowledges, commits included. The
agents are spread over ``--rooms`` rooms, which shows whether commits are
grouped across rooms (they are, in the SQLite store) or serialize room by room.
The server runs in its own process, started with ``statecast serve`` for each
configuration, or is one already running (``--ws``, with ``--server-pid`` for its CPU);
the agents run in this one, so on a small machine both share the cores: compare
configurations measured in one run, as ratios. ``--json FILE`` (``-``: stdout) writes
every figure and the run's metadata.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import websockets
from rich.console import Console
from rich.table import Table

from statecast.loadtest.cli import _list, bounded, command_line, shown
from statecast.loadtest.measure import ProcSample, cpu_between
from statecast.loadtest.metadata import run_meta
from statecast.loadtest.runner import BenchError, Target, check_server_pid, new_run_id
from statecast.protocol import codec
from statecast.protocol.messages import Ack, Action, Error, Hello


class Refused(Exception):
    """The server refused an action: the measurement means nothing past it."""


@dataclass
class Result:
    store: str
    durability: str
    rooms: int
    agents: int
    actions_per_s: float
    ack_p50_ms: float
    ack_p99_ms: float
    server_cpu_s: float | None
    #: The rooms' names (``bench-<run id>-<configuration>-<n>``), to find them on a server.
    room_prefix: str = ""


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
                        raise Refused(f"action refused: {message.code} {message.message}")
                    acked = isinstance(message, Ack) and message.aid == aid
            if now >= start:
                done += 1
                latencies.append(time.perf_counter() - now)
    return done


async def measure(
    store: str,
    durability: str,
    rooms: int,
    agents: int,
    duration: float,
    warmup: float,
    *,
    prefix: str,
    ws_url: str | None = None,
    server_pid: int | None = None,
) -> Result:
    """One configuration; against ``ws_url`` (a running server) when given, else against a
    ``statecast serve`` started for it. Rooms are named ``PREFIX<n>``."""
    target = Target()
    with tempfile.TemporaryDirectory() as tmp:
        if ws_url is not None:
            target.external, target.ws_url, target.pid = True, ws_url.rstrip("/"), server_pid
        else:
            url = f"sqlite:{tmp}/bench.db" if store == "sqlite" else store
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
    cpu = None
    if isinstance(cpu_before, ProcSample) and cpu_after is not None:
        cpu = cpu_between(cpu_before, cpu_after)[0]
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
        room_prefix=prefix,
    )


async def run(args: argparse.Namespace, console: Console) -> list[Result]:
    results = []
    run_id = new_run_id()
    configurations = [
        (rooms, store, durability)
        for rooms in args.rooms
        for store in (["external"] if args.ws else args.stores)
        for durability in (["-"] if args.ws else args.durability if store == "sqlite" else ["ack"])
    ]
    for k, (rooms, store, durability) in enumerate(configurations, start=1):
        console.print(f"{store} {durability} rooms={rooms} agents={args.agents} …")
        results.append(
            await measure(
                store,
                durability,
                rooms,
                args.agents,
                args.duration,
                args.warmup,
                prefix=f"bench-{run_id}-{k}-",
                ws_url=args.ws,
                server_pid=args.server_pid,
            )
        )
    return results


def _csv(kind: Any, low: float | None = None) -> Any:
    return _list(kind, low=low)


def _refusal(args: argparse.Namespace) -> str | None:
    if args.ws is None:
        if args.server_pid is not None:
            return "--server-pid names a running server's process: give its --ws too"
        args.stores = args.stores or ["memory", "sqlite"]
        args.durability = args.durability or ["ack", "async"]
        return None
    if args.stores or args.durability:
        return (
            "--stores and --durability choose how the servers this command starts are run; "
            "with --ws the server is already running: start it with the store to measure"
        )
    if args.server_pid is not None:
        try:
            check_server_pid(args.server_pid, [args.ws])
        except BenchError as exc:
            return str(exc)
    return None


def per_thousand(r: Result, duration: float) -> float | None:
    """Server CPU seconds per 1,000 acknowledged actions (None: CPU not measured)."""
    if r.server_cpu_s is None or not r.actions_per_s:
        return None
    return r.server_cpu_s / (r.actions_per_s * duration) * 1000


def _main(args: argparse.Namespace) -> int:
    to_stderr = args.json == "-"  # stdout carries the JSON alone
    console = Console(stderr=to_stderr)
    if not console.is_terminal:
        console = Console(width=140, stderr=to_stderr)
    refused = _refusal(args)
    if refused is not None:
        console.print(f"statecast bench-actions: {refused}", highlight=False)
        return 2
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    command = command_line(args.own_parser, args)
    try:
        results = asyncio.run(run(args, console))
    except (Refused, OSError) as exc:
        hint = ""
        if "rate" in str(exc):
            hint = ": the server limits each agent's actions; start it with --action-rate 0"
        console.print(f"statecast bench-actions: {exc}{hint}", highlight=False)
        return 1
    table = Table(title="acknowledged actions (closed loop)")
    for col in ("store", "durability", "rooms", "agents", "actions/s", "ACK p50 ms", "ACK p99 ms"):
        table.add_column(col, justify="right")
    table.add_column("server CPU s / 1k actions", justify="right")
    for r in results:
        per_k = per_thousand(r, args.duration)
        table.add_row(
            r.store,
            r.durability,
            str(r.rooms),
            str(r.agents),
            f"{r.actions_per_s:,.0f}",
            f"{r.ack_p50_ms:.2f}",
            f"{r.ack_p99_ms:.2f}",
            "-" if per_k is None else f"{per_k:.3f}",
        )
    console.print(table)
    if args.ws:
        console.print(
            f"rooms left on the target: {', '.join(r.room_prefix + '*' for r in results)} "
            "(statecast has no room deletion over HTTP: each unloads once idle for the "
            "server's --idle-unload seconds, and stays in a persistent store)",
            highlight=False,
        )
    if args.json:
        document = {
            **run_meta(command, started, []),
            "target": args.ws or "a statecast serve per configuration",
            "duration": args.duration,
            "warmup": args.warmup,
            "results": [
                {**asdict(r), "server_cpu_s_per_1k": per_thousand(r, args.duration)}
                for r in results
            ],
        }
        write_json(args.json, document)
    return 0


def write_json(path: str, document: dict[str, Any]) -> None:
    text = json.dumps(document, indent=1)
    if path == "-":
        sys.stdout.write(text + "\n")
    else:
        Path(path).write_text(text)


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

    parser.add_argument(
        "--stores", type=_csv(str), default=None,
        help="stores to measure: memory, sqlite, redis://HOST:PORT/DB (a running Redis) "
        "(default: memory,sqlite)",
    )  # fmt: skip
    parser.add_argument(
        "--durability", type=_csv(str), default=None,
        help="durability modes (for sqlite): ack, async (default: ack,async)",
    )  # fmt: skip
    a("--rooms", _csv(int, 1), [1, 20, 100], "rooms the agents are spread over (list)")
    a("--agents", bounded(int, low=1), 100, "closed-loop agents")
    a("--duration", bounded(float, above=0), 5.0, "seconds measured per configuration")
    a("--warmup", bounded(float, low=0), 1.0, "seconds before measuring")
    parser.add_argument(
        "--ws", metavar="URL", default=None,
        help="a running server's ws://HOST:PORT to measure instead of starting one per "
        "configuration (its store is what it was started with)",
    )  # fmt: skip
    parser.add_argument(
        "--server-pid", type=bounded(int, low=1), default=None,
        help="with --ws: the server's PID, to read its CPU (refused unless it listens there)",
    )  # fmt: skip
    parser.add_argument(
        "--json", metavar="FILE", default=None,
        help="write every figure and the run's metadata as JSON ('-': to stdout)",
    )  # fmt: skip
    parser.set_defaults(func=_main, own_parser=parser)

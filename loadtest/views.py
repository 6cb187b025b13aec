"""``statecast bench-views``: what views cost and save, against spectators of the whole room.

A document room holds ``--zones`` zones of ``--cells`` cells; ``--agents`` agents each
change a random cell ``--rate`` times a second, all over the room. Three runs of
``--duration`` seconds each, against a ``statecast serve`` this command starts (memory
store, loopback), with ``--spectators`` spectators each:

* ``whole``: every spectator sees the whole room (plain DIFFs);
* ``views``: spectator *i* sees zone ``i % zones`` (``--zones`` distinct views, one
  encoding per view per batch);
* ``distinct``: spectator *i* sees zone ``i % zones`` and a key of its own that nothing
  writes (as many distinct views as spectators: the worst case, one cut and one
  encoding per view that changed).

For each: bytes received per spectator, updates delivered (a cell's change reaching a
spectator), the server's CPU per delivered update, and the delay from an action's send
to its arrival (p50, p99) measured on ``--sample`` spectators. The generator (agents and
spectators) runs in this process: its CPU share is printed, and a run where it used most
of a core is marked generator-bound, since its delays are then the generator's too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import websockets

from statecast.loadtest.cli import bounded
from statecast.loadtest.runner import Target
from statecast.protocol.client import connect

ROOM = "bench-views"
MODES = ("whole", "views", "distinct")


def view_for(mode: str, i: int, zones: int) -> Any:
    """The HELLO ``view`` of spectator ``i`` (None: no key, a base client's whole room)."""
    if mode == "whole":
        return None
    if mode == "views":
        return [["zones", f"z{i % zones}"]]
    return [["zones", f"z{i % zones}"], ["marks", f"m{i}"]]


class Spectator:
    __slots__ = ("bytes", "delays", "delivered", "ready", "sampled")

    def __init__(self, sampled: bool) -> None:
        self.sampled = sampled
        self.bytes = 0
        self.delivered = 0
        self.delays: list[float] = []
        self.ready = asyncio.Event()


async def spectate(url: str, view: Any, spectator: Spectator, stop: asyncio.Event) -> None:
    hello: dict[str, Any] = {"v": 1, "role": "spectator"}
    if view is not None:
        hello["view"] = view
    async with websockets.connect(url, max_size=None, compression=None, max_queue=None) as ws:
        await ws.send(msgpack.packb([1, hello]))
        first = await ws.recv()  # WELCOME and its SNAPSHOT, not counted
        assert isinstance(first, bytes)
        spectator.ready.set()
        unpacker = msgpack.Unpacker(raw=False)
        while not stop.is_set():
            try:
                frame = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            assert isinstance(frame, bytes)
            spectator.bytes += len(frame)
            if not spectator.sampled:
                continue
            now = time.time()
            unpacker.feed(frame)
            for message in unpacker:
                ops = message[2] if message[0] == 5 else message[3] if message[0] == 10 else []
                for op in ops:
                    value = op[2] if len(op) > 2 else None
                    if isinstance(value, dict) and "t" in value:
                        spectator.delivered += 1
                        spectator.delays.append(now - value["t"])
                    elif isinstance(value, dict):  # a zone set whole: each cell in it
                        spectator.delivered += sum(
                            1 for cell in value.values() if isinstance(cell, dict) and "t" in cell
                        )


async def agent(
    url: str, name: str, rate: float, zones: int, cells: int, stop: asyncio.Event
) -> int:
    rng = random.Random(name)
    sent = 0
    async with connect(url, client=name) as room:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not stop.is_set():
            zone, cell = f"z{rng.randrange(zones)}", f"c{rng.randrange(cells)}"
            value = {"by": name, "n": sent, "t": time.time()}
            await room.act("patch", [[0, ["zones", zone, cell], value]])
            sent += 1
            next_at += 1 / rate
            await asyncio.sleep(max(0.0, next_at - loop.time()))
    return sent


async def run_mode(target: Target, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    url = f"{target.ws_url}/rooms/{ROOM}"
    stop = asyncio.Event()
    spectators = [Spectator(i < args.sample) for i in range(args.spectators)]
    tasks = [
        asyncio.create_task(spectate(url, view_for(mode, i, args.zones), s, stop))
        for i, s in enumerate(spectators)
    ]
    try:
        async with asyncio.timeout(60):
            await asyncio.gather(*(s.ready.wait() for s in spectators))
        before, gen_before, t0 = target.sample(), time.process_time(), time.monotonic()
        agents = [
            asyncio.create_task(agent(url, f"a{k}", args.rate, args.zones, args.cells, stop))
            for k in range(args.agents)
        ]
        await asyncio.sleep(args.duration)
        stop.set()
        applied = sum(await asyncio.gather(*agents))
        await asyncio.sleep(0.6)  # the last frames arrive
        after, gen_after, elapsed = target.sample(), time.process_time(), time.monotonic() - t0
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*tasks, return_exceptions=True)
    sampled = [s for s in spectators if s.sampled]
    delays = sorted(d for s in sampled for d in s.delays)
    per_sampled = statistics.mean(s.delivered for s in sampled) if sampled else 0.0
    delivered = per_sampled * len(spectators)  # the sample stands for all (same mix)
    cpu = after.cpu - before.cpu if before is not None and after is not None else float("nan")
    generator = (gen_after - gen_before) / elapsed
    return {
        "mode": mode,
        "spectators": len(spectators),
        "distinct_views": {"whole": 1, "views": args.zones, "distinct": len(spectators)}[mode],
        "applied": applied,
        "bytes_per_spectator": statistics.mean(s.bytes for s in spectators),
        "delivered": round(delivered),
        "server_cpu_s": cpu,
        "cpu_us_per_delivered": cpu / delivered * 1e6 if delivered else float("nan"),
        "p50_ms": _pct(delays, 0.50) * 1000,
        "p99_ms": _pct(delays, 0.99) * 1000,
        "generator_cpu": generator,
        "generator_bound": generator > 0.85,
    }


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


async def set_up(http_url: str, zones: int, cells: int) -> None:
    state = {f"z{z}": {f"c{c}": {"by": None, "n": 0} for c in range(cells)} for z in range(zones)}
    body = {"client": "setup", "aid": 1, "name": "patch", "args": [[0, ["zones"], state]]}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{http_url}/rooms/{ROOM}/actions", json=body) as resp,
    ):
        if resp.status != 200:
            raise SystemExit(f"statecast bench-views: setting up the room: {await resp.text()}")


async def bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for round_ in range(args.repeat):
        # Each round in the other order, so that no mode always runs first.
        for mode in args.modes if round_ % 2 == 0 else list(reversed(args.modes)):
            rows.append(await one(mode, args))
            rows[-1]["round"] = round_ + 1
            _print_row(rows[-1])
    return rows


async def one(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """One run of ``mode`` against a server of its own (a fresh room each time)."""
    target = Target()
    cap = str(args.spectators + 100)
    await target.start_statecast(
        ["--store", "memory", "--max-room-connections", cap, "--max-connections", cap,
         "--action-rate", "0"]
    )  # fmt: skip
    try:
        await set_up(target.http_url, args.zones, args.cells)
        return await run_mode(target, mode, args)
    finally:
        await target.stop()


HEADER = (
    f"{'mode':<9} {'S':>5} {'views':>6} {'applied':>8} {'B/spect':>9} {'delivered':>10} "
    f"{'srv CPU s':>9} {'µs/deliv':>9} {'p50 ms':>7} {'p99 ms':>7} {'gen CPU':>7}"
)


def _print_row(r: dict[str, Any]) -> None:
    flag = "  generator-bound" if r["generator_bound"] else ""
    sys.stdout.write(
        f"{r['mode']:<9} {r['spectators']:>5} {r['distinct_views']:>6} {r['applied']:>8} "
        f"{r['bytes_per_spectator']:>9,.0f} {r['delivered']:>10,} {r['server_cpu_s']:>9.2f} "
        f"{r['cpu_us_per_delivered']:>9.2f} {r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} "
        f"{r['generator_cpu']:>6.0%}{flag}\n"
    )
    sys.stdout.flush()


def _modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise argparse.ArgumentTypeError(f"modes are {', '.join(MODES)}; got {text!r}")
    return modes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spectators", type=bounded(int, low=1), default=1000)
    parser.add_argument("--zones", type=bounded(int, low=1), default=10, help="distinct views")
    parser.add_argument("--cells", type=bounded(int, low=1), default=20, help="cells per zone")
    parser.add_argument("--agents", type=bounded(int, low=1), default=4)
    parser.add_argument(
        "--rate", type=bounded(float, above=0), default=10.0, help="actions per second, per agent"
    )
    parser.add_argument(
        "--duration", type=bounded(float, above=0), default=10.0, help="seconds per run"
    )
    parser.add_argument(
        "--sample", type=bounded(int, low=1), default=100, help="spectators that time each update"
    )
    parser.add_argument(
        "--modes", type=_modes, default=list(MODES), help="whole,views,distinct (default: all)"
    )
    parser.add_argument(
        "--repeat", type=bounded(int, low=1), default=1, help="rounds; ratios are their median"
    )
    parser.add_argument("--json", help="write the rows as JSON here")


def _bench(args: argparse.Namespace) -> int:
    if args.sample > args.spectators:
        args.sample = args.spectators
    sys.stdout.write(HEADER + "\n")
    rows = asyncio.run(bench(args))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    for line in ratios(rows):
        sys.stdout.write(line + "\n")
    return 0


def ratios(rows: list[dict[str, Any]]) -> list[str]:
    """Each mode against ``whole`` in the same round; the median over rounds and the range."""
    lines = []
    rounds = sorted({r.get("round", 1) for r in rows})
    for mode in ("views", "distinct"):
        pairs = []
        for n in rounds:
            here = {r["mode"]: r for r in rows if r.get("round", 1) == n}
            if mode in here and "whole" in here:
                pairs.append((here[mode], here["whole"]))
        if not pairs:
            continue
        figures = {
            "bytes per spectator": [
                m["bytes_per_spectator"] / w["bytes_per_spectator"] for m, w in pairs
            ],
            "server CPU per delivered update": [
                m["cpu_us_per_delivered"] / w["cpu_us_per_delivered"] for m, w in pairs
            ],
            "p99": [m["p99_ms"] / w["p99_ms"] for m, w in pairs],
        }
        parts = []
        for name, values in figures.items():
            text = f"{name} {statistics.median(values):.3f}x"
            if len(values) > 1:
                text += f" ({min(values):.3f}-{max(values):.3f})"
            parts.append(text)
        lines.append(f"{mode} / whole over {len(pairs)} round(s): " + ", ".join(parts))
    return lines


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "bench-views",
        help="spectators on views against spectators of the whole room: bytes, CPU, delay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=_bench)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m statecast.loadtest.views", description=__doc__)
    add_arguments(parser)
    raise SystemExit(_bench(parser.parse_args()))


if __name__ == "__main__":
    main()

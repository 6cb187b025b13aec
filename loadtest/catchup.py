"""``python -m statecast.loadtest.catchup``: what a client back after an absence is sent.

A document room of ``--items`` items (``{"owner", "status", "n", "title"}`` each); a
client holds (epoch, seq); while it is away, ``--diffs`` diffs change only the field
``n`` of ``--touched`` items. It then resumes, and this prints the bytes each way of
catching up costs: the net change (PATCH over WebSocket, ``compact=1`` over HTTP), a
replay (when the history still holds the diffs), a SNAPSHOT, and what an HTTP poller
pays (``/changes``, or ``/state`` after its 410). The server runs in this process
(its memory store, no rate limits) so that the index's size can be read too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import websockets

from statecast.server.app import App
from statecast.server.config import Config
from statecast.server.logging import configure_logging

BATCH = 200


async def _hello(url: str, resume: list[Any], head: int, patch: bool) -> tuple[str, int, float]:
    """Resume as a spectator; (sync kind, bytes until caught up to ``head``, seconds)."""
    body: dict[str, Any] = {"v": 1, "role": "spectator", "patch": patch, "resume": resume}
    async with websockets.connect(url, max_size=None, compression=None) as ws:
        t0 = time.perf_counter()
        await ws.send(msgpack.packb([1, body]))
        total, sync = 0, ""
        unpacker = msgpack.Unpacker(raw=False)
        while True:
            frame = await ws.recv()
            assert isinstance(frame, bytes)
            total += len(frame)
            unpacker.feed(frame)
            done = False
            for message in unpacker:
                if message[0] == 2:
                    sync = message[1]["sync"]
                    done = sync == "current"
                elif message[0] in (3, 9):
                    done = True
                elif message[0] == 5 and sync == "replay":
                    done = message[1] >= head
            if done:
                return sync, total, time.perf_counter() - t0


async def run(items: int, diffs: int, touched: int, behind: int) -> dict[str, Any]:
    config = Config(
        host="127.0.0.1",
        port=0,
        http_port=0,
        store="memory",
        action_rate=0,
        identity_action_rate=0,
        identity_write_rate=0,
        max_message_bytes=16 << 20,
        http_max_body=16 << 20,
    )
    app = App(config)
    ports = await app.start()
    http_url, ws_url = f"http://127.0.0.1:{ports.http}", f"ws://127.0.0.1:{ports.ws}/rooms/big"
    out: dict[str, Any] = {"items": items, "diffs": diffs, "touched": touched}
    try:
        async with aiohttp.ClientSession() as http, websockets.connect(ws_url, max_size=None) as ws:
            await ws.send(msgpack.packb([1, {"v": 1, "role": "agent", "client": "writer"}]))
            await ws.recv()
            body = {"owner": None, "status": "open", "n": 0, "title": "an item of the board"}
            state = {f"i{k}": dict(body) for k in range(items)}
            await ws.send(msgpack.packb([4, 1, "patch", [[0, ["items"], state]]]))
            await _count_acks(ws, 0, 1)
            async with http.get(f"{http_url}/rooms/big/state") as resp:
                held = await resp.json()
            epoch, since = held["epoch"], held["seq"]
            aid = 1
            for start in range(0, diffs, BATCH):
                count = min(BATCH, diffs - start)
                frame = b"".join(
                    msgpack.packb([4, aid + 1 + k, "patch", [_set(start + k, touched)]])
                    for k in range(count)
                )
                aid += min(BATCH, diffs - start)
                await ws.send(frame)
                await _count_acks(ws, 0, min(BATCH, diffs - start))
            live = app.rooms.rooms["big"]
            await live.feed.settled()
            head = live.feed.head
            index = live.feed.history.index
            out["index_nodes"] = index.nodes
            nearer = max(since, head - behind)
            for name, cursor in (("from the start", since), (f"{behind} behind", nearer)):
                row: dict[str, Any] = {}
                for label, patch in (("net change", True), ("base contract", False)):
                    sync, size, seconds = await _hello(ws_url, [epoch, cursor], head, patch)
                    row[label] = {"sync": sync, "bytes": size, "ms": round(seconds * 1000, 1)}
                query = f"epoch={epoch}&since={cursor}"
                async with http.get(f"{http_url}/rooms/big/changes?{query}&compact=1") as resp:
                    row["http compact"] = {"status": resp.status, "bytes": len(await resp.read())}
                async with http.get(f"{http_url}/rooms/big/changes?{query}") as resp:
                    plain = {"status": resp.status, "bytes": len(await resp.read())}
                if plain["status"] == 410:
                    async with http.get(f"{http_url}/rooms/big/state") as resp:
                        plain["then /state"] = len(await resp.read())
                row["http changes"] = plain
                out[name] = row
            net = index.net_change(live.feed.state, since) or []
            out["net change as ops"] = len(msgpack.packb(net))
    finally:
        await app.stop()
    return out


def _set(n: int, touched: int) -> list[Any]:
    """The n-th diff's op: item ``n % touched``'s ``n`` set to a value never set before."""
    return [0, ["items", f"i{n % touched}", "n"], n + 1]


async def _count_acks(ws: Any, acked: int, want: int) -> int:
    """Read until ``want`` ACKs or ERRORs came (DIFFs skipped)."""
    unpacker = msgpack.Unpacker(raw=False)
    while acked < want:
        unpacker.feed(await ws.recv())
        for message in unpacker:
            if message[0] in (7, 8):
                acked += 1
    return acked


def _positive_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a comma-separated list of ints >= 1")
    return values


async def _sweep(items: int, diffs: list[int], touched: list[int]) -> list[dict[str, Any]]:
    rows = []
    for t in touched:
        for d in diffs:
            got = await run(items, d, min(t, items), max(1, d // 4))
            start = got["from the start"]
            rows.append(
                {
                    "diffs": d,
                    "touched": min(t, items),
                    "patch bytes": start["net change"]["bytes"],
                    "patch ms": start["net change"]["ms"],
                    "without": start["base contract"]["sync"],
                    "without bytes": start["base contract"]["bytes"],
                    "without ms": start["base contract"]["ms"],
                    "net change as ops": got["net change as ops"],
                    "index nodes": got["index_nodes"],
                }
            )
    return rows


def _plot(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for t in sorted({r["touched"] for r in rows}):
        mine = [r for r in rows if r["touched"] == t]
        xs = [r["diffs"] for r in mine]
        ax.plot(xs, [r["patch bytes"] for r in mine], marker="o", label=f"PATCH, {t} touched")
        ax.plot(
            xs,
            [r["without bytes"] for r in mine],
            marker="x",
            linestyle="--",
            label=f"replay or SNAPSHOT, {t} touched",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("diffs missed")
    ax.set_ylabel("bytes to catch up")
    ax.set_title("Catch-up cost: the net change against replay or SNAPSHOT")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _bench(args: argparse.Namespace) -> int:
    configure_logging("error")
    rows = asyncio.run(_sweep(args.items, args.diffs, args.touched))
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"catch-up from the start of the absence ({args.items} items)")
    for column in rows[0]:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in row.values()))
    Console().print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.plot:
        _plot(rows, args.plot)
        print(f"plot: {args.plot}")
    return 0


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "bench-catchup",
        help="bytes and time of a resume: net change (PATCH) against replay or SNAPSHOT",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--items", type=int, default=10_000, help="items in the room")
    parser.add_argument(
        "--diffs", type=_positive_list, default=[10, 100, 1_000, 10_000, 100_000],
        help="diffs missed (list; default: 10,100,1000,10000,100000)",
    )  # fmt: skip
    parser.add_argument(
        "--touched", type=_positive_list, default=[1, 100, 10_000],
        help="items those diffs change (list; default: 1,100,10000)",
    )  # fmt: skip
    parser.add_argument("--plot", help="write a PNG plot here (matplotlib: the plot extra)")
    parser.add_argument("--json", help="write the rows as JSON here")
    parser.set_defaults(func=_bench)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m statecast.loadtest.catchup", description=__doc__
    )
    parser.add_argument("--items", type=int, default=10_000, help="items in the room")
    parser.add_argument("--diffs", type=int, default=20_000, help="diffs while away")
    parser.add_argument("--touched", type=int, default=50, help="items those diffs change")
    parser.add_argument("--behind", type=int, default=5_000, help="a second, nearer cursor")
    args = parser.parse_args()
    for name in ("items", "diffs", "touched", "behind"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    configure_logging("error")  # the server shares this process: its log stays out of stdout
    print(json.dumps(asyncio.run(run(args.items, args.diffs, args.touched, args.behind)), indent=2))


if __name__ == "__main__":
    main()

"""What the fan-out loop costs per write, against a bare ``transport.write`` loop.

``python -m statecast.loadtest.fanout_cost --connections 1000``

One process serves N real WebSocket connections (websockets, uvloop, the
server's own settings) opened by a child process that never reads, and times,
in CPU seconds of this process, passes of

* ``raw``: one ``transport.write`` of a pre-framed frame per connection, nothing else;
* ``feed``: the server's own fan-out, :meth:`RoomFeed._fanout`, over the same
  connections as members of a room (its seating, its metrics, its frame building);
* ``publish``: a whole batch through :meth:`RoomFeed.publish` (history, index, fan-out),
  one op per batch, every connection seeing the whole room;
* ``views``: the same batches with each connection on one of ``--views`` views (a zone
  each, one zone changed per batch): the batch's net change, one cut per view, one
  VIEW_DIFF for the view it touched, written to that view's members only;

alternating the two, each going first in half the rounds, so that both see the same
machine. It isolates the loop from
everything else a room does (actions, ACKs, pings), which ``statecast bench``
measures end to end against the ``raw`` floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Frame, Opcode

from statecast.protocol import codec
from statecast.protocol.ops import SET, apply_wire_ops
from statecast.protocol.views import ALL, from_prefixes
from statecast.server.config import Config
from statecast.server.fanout import FeedConnection, Subscriber
from statecast.server.feed import RoomFeed
from statecast.server.history import History
from statecast.server.metrics import Metrics

PAYLOAD = bytes(40)  # about one position update


async def _clients(port: int, count: int) -> None:
    """Open ``count`` connections and never read (the kernel buffers what arrives)."""
    import websockets

    conns = []
    for _ in range(count):
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/", ping_interval=None)
        ws.transport.pause_reading()
        conns.append(ws)
    sys.stdout.write("connected\n")
    sys.stdout.flush()
    await asyncio.sleep(3600)


def _batches(
    subs: list[Subscriber], config: Config, views: int, passes: int, rounds: int
) -> tuple[float, float]:
    """Best CPU seconds per batch through RoomFeed.publish: every connection on the whole
    room, then each on one of ``views`` zone views (alternating, as the loops above)."""
    zones = [f"z{k}" for k in range(views)]
    best: dict[str, float] = {}

    def feed_for(viewed: bool) -> RoomFeed:
        state = {"zones": {z: {"c": 0} for z in zones}}
        feed = RoomFeed(
            "fanout-cost", state, epoch="e", head=0, acked={}, history=History(),
            config=config, metrics=Metrics(),
        )  # fmt: skip
        for i, sub in enumerate(subs):
            sub.spec = from_prefixes([["zones", zones[i % views]]]) if viewed else ALL
            feed.add(sub)
        return feed

    for r in range(rounds):
        for name in ("publish", "views") if r % 2 == 0 else ("views", "publish"):
            feed = feed_for(name == "views")
            started = time.process_time()
            for n in range(1, passes + 1):
                path: list[str | int] = ["zones", zones[n % views], "c"]
                op: list[Any] = [SET, path, n]
                apply_wire_ops(feed.state, [op])
                feed.history.index.record(n, SET, path)
                feed.publish([(n, codec.encode_diff(n, [op]))], {})
            seconds = (time.process_time() - started) / passes
            best[name] = min(best.get(name, seconds), seconds)
            for sub in subs:
                feed.leave(sub)
    for sub in subs:
        sub.spec = ALL
    return best["publish"], best["views"]


async def measure(count: int, passes: int, rounds: int, views: int = 10) -> dict[str, Any]:
    config = Config()
    subs: list[Subscriber] = []
    ready = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        assert isinstance(ws, FeedConnection)
        subs.append(Subscriber(ws, "spectator", None))
        if len(subs) == count:
            ready.set()
        await ws.wait_closed()

    async with serve(
        handler,
        "127.0.0.1",
        0,
        compression=None,
        create_connection=FeedConnection,
        ping_interval=None,
        write_limit=config.slow_high_water,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "statecast.loadtest.fanout_cost", "--serve-clients", str(port),
            "--connections", str(count), stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await asyncio.wait_for(ready.wait(), 120)
            feed = RoomFeed(
                "fanout-cost", {}, epoch="e", head=0, acked={}, history=History(),
                config=config, metrics=Metrics(),
            )  # fmt: skip
            for sub in subs:
                feed.add(sub)
            frame = Frame(Opcode.BINARY, PAYLOAD).serialize(mask=False)
            writes = [sub.transport.write for sub in subs]

            def raw() -> None:
                for write in writes:
                    write(frame)

            def fed() -> None:
                feed._fanout(PAYLOAD, {})

            best: dict[str, float] = {}
            loops = [("raw", raw), ("feed", fed)]
            for _ in range(rounds):
                loops.reverse()  # each goes first in half the rounds: the first one pays more
                for name, run in loops:
                    started = time.process_time()
                    for _ in range(passes):
                        run()
                        await asyncio.sleep(0)  # let the loop flush, as between real passes
                    ns = (time.process_time() - started) / passes / count * 1e9
                    best[name] = min(best.get(name, ns), ns)
            for sub in subs:
                feed.leave(sub)
            publish_best, views_best = _batches(subs, config, views, passes, rounds)
        finally:
            child.kill()
            await child.wait()
    per_view = count // views
    result: dict[str, Any] = {
        "connections": count,
        "views": views,
        "ns_per_write": best,
        "feed_over_raw": best["feed"] / best["raw"],
        # CPU per update delivered to one connection: a whole-room batch reaches every
        # connection, a view's batch only that view's members.
        "ns_per_delivered": {
            "publish": publish_best * 1e9 / count,
            "views": views_best * 1e9 / per_view,
        },
    }
    result["views_over_publish"] = (
        result["ns_per_delivered"]["views"] / result["ns_per_delivered"]["publish"]
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m statecast.loadtest.fanout_cost")
    parser.add_argument("--connections", type=int, default=1000, help="(default: 1000)")
    parser.add_argument("--passes", type=int, default=50, help="per round (default: 50)")
    parser.add_argument("--rounds", type=int, default=4, help="best of (default: 4)")
    parser.add_argument("--views", type=int, default=10, help="distinct views (default: 10)")
    parser.add_argument("--serve-clients", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import uvloop  # a dependency wherever the server runs on uvloop; the figures need it

    if args.serve_clients:
        uvloop.run(_clients(args.serve_clients, args.connections))
        return
    result = uvloop.run(measure(args.connections, args.passes, args.rounds, args.views))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

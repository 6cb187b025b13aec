"""What the fan-out loop costs per write, against a bare ``transport.write`` loop.

``python -m statecast.loadtest.fanout_cost --connections 1000``

One process serves N real WebSocket connections (websockets, uvloop, the
server's own settings) opened by a child process that never reads, and times,
in CPU seconds of this process, passes of

* ``raw``: one ``transport.write`` of a pre-framed frame per connection, nothing else;
* ``feed``: the server's own fan-out, :meth:`RoomFeed._fanout`, over the same
  connections as members of a room (its seating, its metrics, its frame building);

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


async def measure(count: int, passes: int, rounds: int) -> dict[str, Any]:
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
        finally:
            child.kill()
            await child.wait()
    return {
        "connections": count,
        "ns_per_write": best,
        "feed_over_raw": best["feed"] / best["raw"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m statecast.loadtest.fanout_cost")
    parser.add_argument("--connections", type=int, default=1000, help="(default: 1000)")
    parser.add_argument("--passes", type=int, default=50, help="per round (default: 50)")
    parser.add_argument("--rounds", type=int, default=4, help="best of (default: 4)")
    parser.add_argument("--serve-clients", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import uvloop  # a dependency wherever the server runs on uvloop; the figures need it

    if args.serve_clients:
        uvloop.run(_clients(args.serve_clients, args.connections))
        return
    result = uvloop.run(measure(args.connections, args.passes, args.rounds))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

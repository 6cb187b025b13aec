"""The floor: a bare websockets server that rebroadcasts every frame it receives.

No rooms, no HELLO, no validation, no sequence numbers, no history, no
persistence: agents send the DIFF-shaped frames push would carry and this
server hands each one to every open connection with ``websockets.broadcast``.
Whatever statecast's push costs above this is the price of being a room.
It runs on uvloop with the same ping and size settings as the server.

``python -m statecast.loadtest.floor --port 0`` prints ``{"port": N}`` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys

from websockets.asyncio.server import ServerConnection, broadcast, serve


async def serve_floor(host: str, port: int, ping_interval: float) -> None:
    connections: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        connections.add(ws)
        try:
            async for message in ws:
                broadcast(connections, message)
        finally:
            connections.discard(ws)

    async with serve(
        handler,
        host,
        port,
        compression=None,
        max_size=1 << 20,
        ping_interval=ping_interval or None,
        ping_timeout=ping_interval or None,
    ) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        sys.stdout.write(json.dumps({"port": bound}) + "\n")
        sys.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m statecast.loadtest.floor", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ping-interval", type=float, default=20.0)
    args = parser.parse_args()
    coro = serve_floor(args.host, args.port, args.ping_interval)
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        with contextlib.suppress(KeyboardInterrupt):
            uvloop.run(coro)


if __name__ == "__main__":
    main()

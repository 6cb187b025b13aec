"""The floors: bare websockets servers that rebroadcast every frame they receive.

No rooms, no HELLO, no validation, no sequence numbers, no history, no
persistence: agents send the DIFF-shaped frames push would carry and this
server hands each one to every open connection. Whatever statecast's push
costs above this is the price of being a room. Both run on uvloop with the same
ping and size settings as the server.

* ``floor`` hands each frame to ``websockets.broadcast``;
* ``raw`` (``--raw``) frames it once and writes the same bytes to every
  connection's transport with one ``transport.write`` each: no websockets
  machinery on the write path at all, the least a broadcast over WebSocket
  can cost in Python.

``python -m statecast.loadtest.floor --port 0`` prints ``{"port": N}`` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.frames import Frame, Opcode


async def serve_floor(host: str, port: int, ping_interval: float, *, raw: bool = False) -> None:
    connections: set[ServerConnection] = set()
    writes: dict[ServerConnection, Callable[[bytes], object]] = {}

    def write_all(message: bytes) -> None:
        frame = Frame(Opcode.BINARY, message).serialize(mask=False)
        for write in writes.values():
            write(frame)

    async def handler(ws: ServerConnection) -> None:
        connections.add(ws)
        writes[ws] = ws.transport.write
        try:
            async for message in ws:
                if raw:
                    write_all(message if isinstance(message, bytes) else message.encode())
                else:
                    broadcast(connections, message)
        finally:
            connections.discard(ws)
            writes.pop(ws, None)

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
    parser.add_argument("--raw", action="store_true", help="one transport.write per connection")
    args = parser.parse_args()
    coro = serve_floor(args.host, args.port, args.ping_interval, raw=args.raw)
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        with contextlib.suppress(KeyboardInterrupt):
            uvloop.run(coro)


if __name__ == "__main__":
    main()

"""Subscribers and the write path.

A diff is encoded once (by the room) and *framed* once here: server-to-client
frames are unmasked, so the same frame bytes are valid on every connection and
go straight to each transport with one ``write`` — no per-subscriber encoding,
framing or await. When permessage-deflate was negotiated for a connection the
bytes cannot be shared, and that connection falls back to websockets' own
``send_binary`` path.

Backpressure is the transport's write buffer: a subscriber whose unsent bytes
pass the high-water mark gets no more diffs; the room brings it back with one
SNAPSHOT once it drains (docs/protocol.md §6.5).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from statecast.protocol.messages import Role

_conn_ids = itertools.count(1)


async def close_or_abort(conn: ServerConnection, code: int, reason: str, timeout: float) -> None:
    """Close with ``code``, or abort if the peer has not taken the close frame within ``timeout``.

    websockets' close() first waits for the write buffer to drain, with no time limit: a
    client that reads nothing would hold its session and its backlog open.
    """
    try:
        async with asyncio.timeout(timeout):
            await conn.close(code, reason)
    except TimeoutError:
        conn.transport.abort()


def frame_binary(payload: bytes) -> bytes:
    """An unmasked binary frame holding ``payload``: valid on any server connection."""
    return Frame(Opcode.BINARY, payload).serialize(mask=False)


class Subscriber:
    """One WebSocket connection's seat in a room."""

    __slots__ = (
        "buffered",
        "client",
        "conn",
        "held",
        "id",
        "lagging",
        "plain",
        "protocol",
        "role",
        "transport",
        "write",
    )

    def __init__(self, conn: ServerConnection, role: Role, client: str | None) -> None:
        self.conn = conn
        self.transport: Any = conn.transport
        self.protocol = conn.protocol
        # Bound once, so the fan-out loop reaches the transport without a Python call.
        self.write: Callable[[bytes], object] = conn.transport.write
        self.buffered: Callable[[], int] = conn.transport.get_write_buffer_size
        self.role: Role = role
        self.client = client
        self.id = next(_conn_ids)
        # No extension negotiated: the shared frame bytes are valid as they are.
        self.plain = not conn.protocol.extensions
        self.lagging = False
        # ACK/ERROR frames for a lagging subscriber, sent after its catch-up SNAPSHOT.
        self.held: list[bytes] = []

    @property
    def open(self) -> bool:
        return self.conn.protocol.state is State.OPEN

    def backlog(self) -> int:
        return int(self.transport.get_write_buffer_size())

    def send(self, payload: bytes, frame: bytes | None = None) -> None:
        """Write one frame holding ``payload`` (one or more encoded messages).

        ``frame`` is that frame already built, when the same bytes go to every
        subscriber; a connection with an extension negotiated frames ``payload`` itself.
        """
        if self.conn.protocol.state is not State.OPEN:
            return
        if self.plain:
            self.transport.write(frame if frame is not None else frame_binary(payload))
        else:
            self.conn.protocol.send_binary(payload)
            self.conn.send_data()

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

The fan-out loop itself checks nothing per subscriber: a :class:`FeedConnection`
reports, as it happens, each reason its transport must stop getting the shared
frame (its buffer passed the high-water mark, a close frame went out, the
transport is gone), and the room takes it off the direct path before its next
pass (server/feed.py).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from statecast.protocol.messages import Role
from statecast.protocol.views import ALL, Spec

if TYPE_CHECKING:
    from statecast.server.view_groups import ViewGroup

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


class FeedConnection(ServerConnection):
    """A server connection that tells its room when it stops taking frames.

    Three things end the bare writes of the shared frame to a connection:

    * asyncio flow control's ``pause_writing``: the unsent bytes passed the
      high-water mark (``write_limit``, the server's ``slow_high_water``);
    * a close frame went out (no data frame may follow one, RFC 6455 §5.5.1):
      websockets writes every close frame through ``send_data``, in the same
      synchronous step that sets ``close_sent``;
    * the transport is gone (``connection_lost``).

    Each calls ``on_stall`` once, which the room sets while the connection is on
    its direct path. ``pause_writing`` runs inside ``transport.write``, so in the
    middle of a fan-out pass: ``on_stall`` must only take note, never change the
    room's members.
    """

    on_stall: Callable[[], None] | None = None

    def pause_writing(self) -> None:
        super().pause_writing()
        self._stalled()

    def send_data(self) -> None:
        super().send_data()
        if self.protocol.close_sent is not None or self.protocol.state is State.CLOSED:
            self._stalled()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._stalled()

    def _stalled(self) -> None:
        on_stall, self.on_stall = self.on_stall, None
        if on_stall is not None:
            on_stall()


def frame_binary(payload: bytes) -> bytes:
    """An unmasked binary frame holding ``payload``: valid on any server connection."""
    return Frame(Opcode.BINARY, payload).serialize(mask=False)


class Subscriber:
    """One WebSocket connection's seat in a room."""

    __slots__ = (
        "answers",
        "client",
        "conn",
        "group",
        "held",
        "id",
        "lagging",
        "patch",
        "plain",
        "protocol",
        "role",
        "spec",
        "transport",
        "view",
        "view_set_at",
        "view_unsent",
        "write",
    )

    def __init__(
        self,
        conn: FeedConnection,
        role: Role,
        client: str | None,
        *,
        answers: bool = False,
        patch: bool = False,
        view: list[list[str]] | Literal[True] | None = None,
        spec: Spec = ALL,
    ) -> None:
        self.conn = conn
        #: The prefixes its HELLO (or its last VIEW) asked for (True: all it may see;
        #: None: no "view" key, a base client); ``spec`` is what it sees, within its token
        #: and the room's private parts (docs/protocol.md §5.12). ALL: the whole room, by
        #: plain DIFFs.
        self.view = view
        self.spec: Spec = spec
        #: The view group it gets its frames from (server/view_groups.py), if not ALL.
        self.group: ViewGroup | None = None
        #: The head at its last VIEW_SET: a RESYNC from before it gets a SNAPSHOT (its copy
        #: took that VIEW_SET's ops while it waited for the RESYNC's answer).
        self.view_set_at = 0
        #: A VIEW came while it was lagging: its VIEW_SET goes just before its SNAPSHOT.
        self.view_unsent = False
        #: The HELLO asked for net-change catch-up (PATCH, docs/protocol.md §5.11).
        self.patch = patch
        #: The HELLO asked for handlers' answers in ACKs (docs/protocol.md §5.8).
        self.answers = answers
        self.transport: Any = conn.transport
        self.protocol = conn.protocol
        # Bound once, so the fan-out loop reaches the transport without a Python call.
        self.write: Callable[[bytes], object] = conn.transport.write
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

    @property
    def closing(self) -> bool:
        """A close frame went out, or the transport is gone: no frame may be written now."""
        return self.protocol.close_sent is not None or self.protocol.state is State.CLOSED

    @property
    def paused(self) -> bool:
        """Flow control paused the transport: its unsent bytes passed the high-water mark
        and have not yet drained to a quarter of it."""
        return self.conn.paused

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

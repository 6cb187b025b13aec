"""A subscriber that stops reading is skipped ahead, never queued for without bound.

The slow client is a plain websockets connection on a socket with a tiny
receive buffer and a one-frame receive queue: once it stops calling ``recv()``,
its TCP window closes and the server's write buffer for it is all that can
grow. The server must stop writing diffs to it past ``slow_high_water``, keep
every other subscriber on the live diff stream, and then either bring it back
with one SNAPSHOT at the head once it drains, or close it with 4008 after
``slow_timeout``. Conformance: docs/protocol.md §6.5.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection

from tests.helpers import (
    TIMEOUT,
    BareClient,
    RunningServer,
    bare,
    eventually,
    make_room,
    running_server,
    unpack,
)

HIGH_WATER = 64 * 1024
BLOB = 16 * 1024
MAX_ACTIONS = 2_000  # the kernel's socket buffers take a few MiB before the server's fills
ROOM = "slow"


def fast_limits() -> dict[str, Any]:
    """The agent here acts as fast as the server answers: no rate limit in the way."""
    return {"action_rate": 1e9, "action_burst": 1_000_000_000}


def metric(server: RunningServer, name: str, labels: dict[str, str] | None = None) -> float:
    value = server.app.metrics.registry.get_sample_value(name, labels or {})
    return value or 0.0


@contextlib.asynccontextmanager
async def stalled_client(server: RunningServer) -> AsyncIterator[ClientConnection]:
    """A websockets client that takes almost nothing from the network unless recv() is called.

    Its room is created first (it joins as a spectator, and spectators never create rooms)."""
    await make_room(server, ROOM)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", int(server.ws_url.rsplit(":", 1)[1])))
    sock.setblocking(False)
    async with websockets.connect(
        server.room_url(ROOM), sock=sock, max_queue=1, max_size=None, compression=None
    ) as ws:
        yield ws


def server_side(server: RunningServer, ws: ClientConnection) -> ServerConnection:
    """The server's connection object for the client ``ws`` (matched by address)."""
    assert server.app.ws.server is not None
    for conn in server.app.ws.server.connections:
        if conn.remote_address == ws.local_address:
            return conn
    raise AssertionError("no server connection for the slow client")


@dataclass
class Observer:
    """A spectator that reads everything, as fast as it arrives."""

    client: BareClient
    diffs: list[int] = field(default_factory=list)
    snapshots: list[int] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            message = await self.client.recv(timeout=TIMEOUT * 6)
            if message[0] == 5:
                self.diffs.append(message[1])
            elif message[0] == 3:
                self.snapshots.append(message[2])

    async def wait_for(self, seq: int) -> None:
        await eventually(lambda: bool(self.diffs) and self.diffs[-1] >= seq)


async def push_until_skipped(
    server: RunningServer, agent: BareClient, slow: ServerConnection, first_aid: int = 1
) -> tuple[int, int]:
    """Act (one diff of ~BLOB bytes each) until the slow subscriber has been skipped, plus a
    few more; return (last aid, largest write buffer seen for the slow connection)."""
    largest = 0
    extra = 0
    aid = first_aid - 1
    for aid in range(first_aid, first_aid + MAX_ACTIONS):
        blob = chr(ord("a") + aid % 26) * BLOB
        await agent.send([4, aid, "patch", [[0, ["k", str(aid % 4)], blob], [0, ["n"], aid]]])
        ack = await agent.recv_type(7)
        assert ack[1] == aid
        largest = max(largest, slow.transport.get_write_buffer_size())
        if metric(server, "statecast_slow_subscriber_skips_total") > 0:
            extra += 1
            if extra > 50:
                return aid, largest
    raise AssertionError(f"no skip after {MAX_ACTIONS} actions")


async def join_and_stall(
    server: RunningServer, slow_ws: ClientConnection, agent: BareClient
) -> None:
    """The stalled client joins as a spectator, then the agent pushes until it is skipped."""
    slow = BareClient(slow_ws)
    await slow.hello("spectator")
    await slow.recv()
    await agent.hello("agent", client="pusher")
    await agent.recv_type(3)
    await push_until_skipped(server, agent, server_side(server, slow_ws))


async def drain_until_closed(ws: ClientConnection) -> list[Any]:
    """Read every message the slow client is owed, until the server closes it."""
    messages: list[Any] = []
    with contextlib.suppress(websockets.ConnectionClosed):
        async with asyncio.timeout(TIMEOUT * 2):
            while True:
                frame = await ws.recv()
                assert isinstance(frame, bytes)
                messages.extend(unpack(frame))
    return messages


async def test_stalled_subscriber_is_bounded_then_skipped_ahead_by_snapshot() -> None:
    """A stalled subscriber's backlog is bounded; reading again gets a head SNAPSHOT, then DIFFs."""
    async with (
        running_server(
            slow_high_water=HIGH_WATER, slow_timeout=TIMEOUT * 6, **fast_limits()
        ) as server,
        stalled_client(server) as slow_ws,
        bare(server.room_url(ROOM)) as agent,
        bare(server.room_url(ROOM)) as spectator,
    ):
        slow = BareClient(slow_ws)
        await slow.hello("spectator")
        assert (await slow.recv())[0] == 3
        await agent.hello("agent", client="pusher")
        await agent.recv_type(3)
        await spectator.hello("spectator")
        observer = Observer(spectator)
        reader = asyncio.create_task(observer.run())
        try:
            slow_conn = server_side(server, slow_ws)
            last, largest = await push_until_skipped(server, agent, slow_conn)
            live = server.app.rooms.rooms[ROOM]
            assert live.feed.head == last

            # Bounded: writing stops at the high-water mark (the check precedes one last frame).
            assert largest <= HIGH_WATER + 2 * (BLOB + 1024), largest
            assert all(sub.conn is not slow_conn for sub in live.feed.members)
            # Nobody else was held back: the reading spectator got every diff, in order.
            await observer.wait_for(last)
            assert observer.diffs == list(range(1, last + 1))
            assert observer.snapshots == [0]

            # Reading again: what was buffered, then one SNAPSHOT at the head, then live diffs.
            seen: list[Any] = []
            async with asyncio.timeout(TIMEOUT * 2):
                while not seen or seen[-1][0] != 3:
                    seen.append(await slow.recv())
            diffs = [m[1] for m in seen if m[0] == 5]
            assert diffs == list(range(1, len(diffs) + 1))
            snapshot = seen[-1]
            assert snapshot[2] == last
            assert snapshot[3] == live.writer.room.state
            await agent.send([4, last + 1, "patch", [[0, ["n"], -1]]])
            assert await slow.recv() == [5, last + 1, [[0, ["n"], -1]]]
            await observer.wait_for(last + 1)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


async def test_subscriber_that_never_drains_is_closed_4008() -> None:
    """A skipped subscriber that does not drain within slow_timeout is closed with 4008."""
    async with (
        running_server(
            slow_high_water=HIGH_WATER, slow_timeout=2.0 * TIMEOUT / 5, **fast_limits()
        ) as server,
        stalled_client(server) as slow_ws,
        bare(server.room_url(ROOM)) as agent,
    ):
        await join_and_stall(server, slow_ws, agent)
        await eventually(lambda: metric(server, "statecast_closes_total", {"code": "4008"}) >= 1)
        messages = await drain_until_closed(slow_ws)
        assert slow_ws.close_code == 4008
        assert all(m[0] == 5 for m in messages)
        # The agent is unaffected.
        await agent.send([4, 10_000, "patch", [[0, ["done"], True]]])
        assert (await agent.recv_type(7))[1] == 10_000


async def test_dead_reader_connection_is_released() -> None:
    """A subscriber that never reads again is dropped, not held open waiting for its close frame."""
    async with (
        running_server(
            slow_high_water=HIGH_WATER,
            slow_timeout=0.2 * TIMEOUT / 5,
            ping_interval=0,  # no keepalive: nothing else would ever end the session
            **fast_limits(),
        ) as server,
        stalled_client(server) as slow_ws,
        bare(server.room_url(ROOM)) as agent,
    ):
        await join_and_stall(server, slow_ws, agent)
        live = server.app.rooms.rooms[ROOM]
        await eventually(lambda: live.feed.connections == 1, TIMEOUT * 3)
        assert metric(server, "statecast_closes_total", {"code": "4008"}) == 1
        # The connection was aborted: the client learns it ended, whatever it reads first.
        await drain_until_closed(slow_ws)
        assert slow_ws.close_code in (4008, 1006)

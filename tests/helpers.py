"""Test helpers: a real server on loopback, and a bare client built from websockets + msgpack.

The bare client deliberately does not use protocol/: the protocol tests speak
docs/protocol.md's bytes directly, so the server and the project's own client cannot
agree on a mistake.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgpack
import websockets
from websockets.asyncio.client import ClientConnection

from statecast.server.app import App
from statecast.server.config import Config

SCALE = float(os.environ.get("STATECAST_TEST_TIMEOUT_SCALE", "1"))
TIMEOUT = 5.0 * SCALE


@dataclass
class RunningServer:
    app: App
    ws_url: str
    http_url: str

    def room_url(self, room: str) -> str:
        return f"{self.ws_url}/rooms/{room}"


async def make_room(server: RunningServer, name: str) -> None:
    """Create room ``name`` as an agent's first join would: spectators never create rooms,
    and a test whose spectator joins first needs the room to be there."""
    await server.app.rooms.get(name, create=True)


#: The per-identity quotas off (server/quotas.py): a test's many clients all come from
#: 127.0.0.1, one identity. The quota tests set them themselves.
ONE_HOST_SETTINGS: dict[str, Any] = {
    "identity_action_rate": 0,
    "identity_write_rate": 0,
    "identity_connections": 0,
    "identity_rooms_per_minute": 0,
    "room_clients_per_identity": 0,
}
ONE_HOST_FLAGS: tuple[str, ...] = tuple(
    f"--{name.replace('_', '-')}={value}" for name, value in ONE_HOST_SETTINGS.items()
)


@contextlib.asynccontextmanager
async def running_server(**settings: Any) -> AsyncIterator[RunningServer]:
    """Start a statecast server on 127.0.0.1 with free ports; stop it gracefully after."""
    settings.setdefault("store", "memory")
    for name, value in ONE_HOST_SETTINGS.items():
        settings.setdefault(name, value)
    config = Config(host="127.0.0.1", port=0, http_port=0, **settings)
    app = App(config)
    ports = await app.start()
    try:
        yield RunningServer(app, f"ws://127.0.0.1:{ports.ws}", f"http://127.0.0.1:{ports.http}")
    finally:
        await app.stop()


def pack(*messages: Any) -> bytes:
    return b"".join(msgpack.packb(m, use_bin_type=True) for m in messages)


def unpack(frame: bytes) -> list[Any]:
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(frame)
    return list(unpacker)


class BareClient:
    """docs/protocol.md spoken by hand: send msgpack arrays, read them back message by message."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.buffer: list[Any] = []

    async def send(self, *messages: Any) -> None:
        await self.ws.send(pack(*messages))

    async def recv(self, timeout: float = TIMEOUT) -> list[Any]:
        if not self.buffer:
            frame = await asyncio.wait_for(self.ws.recv(), timeout)
            assert isinstance(frame, bytes), "the server sends binary frames only"
            self.buffer.extend(unpack(frame))
        return self.buffer.pop(0)

    async def recv_type(self, kind: int, timeout: float = TIMEOUT) -> list[Any]:
        """The next message of type ``kind``, skipping others."""
        while True:
            message = await self.recv(timeout)
            if message[0] == kind:
                return message

    async def hello(self, role: str = "agent", **fields: Any) -> dict[str, Any]:
        await self.send([1, {"v": 1, "role": role, **fields}])
        welcome = await self.recv()
        assert welcome[0] == 2, welcome
        return welcome[1]

    async def closed(self, timeout: float = TIMEOUT) -> int | None:
        """Wait for the server to close; return the close code."""
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout)
        return self.ws.close_code


@contextlib.asynccontextmanager
async def bare(url: str) -> AsyncIterator[BareClient]:
    # max_queue=None: websockets stops reading the socket once max_queue frames wait
    # unread and resumes only on recv(), so a client that stops reading and then closes
    # would miss the server's close frame and hang for close_timeout (10 s).
    async with websockets.connect(url, max_size=None, compression=None, max_queue=None) as ws:
        yield BareClient(ws)


async def eventually(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll state that has no event to wait on from outside until ``condition`` holds."""
    async with asyncio.timeout(timeout):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        yield session

"""The generators' sockets, counted byte for byte.

Both transports count at the boundary with the kernel: every byte handed to
``transport.write`` and every byte ``data_received`` gets, so HTTP request and
status lines, headers, WebSocket handshakes, frame headers, masks, pings and
pongs are all in the figures, exactly as they cross the loopback interface
(TCP/IP headers aside).

* :class:`CountedWebSocket` is websockets' own client connection with two
  hooks: the sans-I/O protocol's outgoing bytes are counted as they are
  written, and each complete binary message is handed to a callback straight
  from ``data_received`` instead of going through the receive queue, which
  keeps a generator of a thousand observers cheap.
* :class:`HttpConnection` is a minimal HTTP/1.1 keep-alive client, one request
  at a time, enough for ``GET /state`` with ``If-None-Match`` and
  ``POST /actions``. It is used instead of aiohttp's client because a generator
  on a two-core machine must cost the server as little CPU as possible; the
  requests carry what a lean client sends (Host, User-Agent, Accept, and the
  validator), so polling's header figures are, if anything, below a browser's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.frames import Frame, Opcode

from statecast.loadtest.measure import Counters

USER_AGENT = "statecast-bench/0.1"


class CountedWebSocket(ClientConnection):
    """A websockets client connection that counts its bytes and delivers frames synchronously."""

    counters: Counters
    on_message: Callable[[bytes], None] | None

    def __init__(self, protocol: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(protocol, *args, **kwargs)
        self.on_message = None
        original = protocol.data_to_send

        def counted() -> list[bytes]:
            chunks: list[bytes] = original()
            counters = self.counters
            for chunk in chunks:
                counters.up += len(chunk)
            return chunks

        protocol.data_to_send = counted

    def data_received(self, data: bytes) -> None:
        self.counters.down += len(data)
        super().data_received(data)

    def process_event(self, event: Any) -> None:
        handler = self.on_message
        if (
            handler is not None
            and self.response is not None
            and isinstance(event, Frame)
            and event.opcode is Opcode.BINARY
            and event.fin
        ):
            self.counters.frames_down += 1
            handler(bytes(event.data))
            return
        super().process_event(event)

    def send_now(self, payload: bytes) -> None:
        """Send one binary message without awaiting (the write buffer is the only queue)."""
        self.protocol.send_binary(payload)
        self.send_data()
        self.counters.frames_up += 1


def negotiated(extensions: Iterable[Any]) -> str:
    """What a connection's handshake settled on: ``permessage-deflate`` or ``none``."""
    names = [str(getattr(e, "name", e)) for e in extensions]
    return ",".join(names) if names else "none"


async def open_websocket(url: str, counters: Counters, open_timeout: float) -> CountedWebSocket:
    """Connect, offering permessage-deflate as browsers do: the server decides whether it
    is used (statecast's ``--compression``), and :func:`negotiated` says what it chose.
    Bytes of the handshake are counted too, compressed frames as they cross the socket."""

    def factory(protocol: Any, **kwargs: Any) -> CountedWebSocket:
        conn = CountedWebSocket(protocol, **kwargs)
        conn.counters = counters
        return conn

    ws = await websockets.connect(
        url,
        create_connection=factory,  # type: ignore[arg-type]
        compression="deflate",
        max_size=None,
        ping_interval=None,  # browsers do not ping; the server's pings are answered and counted
        open_timeout=open_timeout,
        user_agent_header=USER_AGENT,
    )
    assert isinstance(ws, CountedWebSocket)
    return ws


class HttpError(Exception):
    pass


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time, reopened if the server closes."""

    def __init__(self, base_url: str, counters: Counters) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"not an http:// URL: {base_url}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.counters = counters
        self._host_header = f"Host: {parts.netloc}\r\nUser-Agent: {USER_AGENT}\r\n".encode()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, dict[str, str], bytes]] | None = None
        self._head: tuple[int, dict[str, str], int] | None = None

    # --- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.counters.down += len(data)
        self._buffer += data
        self._parse()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(HttpError(f"connection lost: {exc}"))

    # --- requests ------------------------------------------------------------------------

    async def open(self) -> None:
        if self._transport is None or self._transport.is_closing():
            loop = asyncio.get_running_loop()
            await loop.create_connection(lambda: self, self.host, self.port)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def request(
        self,
        method: str,
        path: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """Send one request and return (status, lowercased headers, body)."""
        await self.open()
        assert self._transport is not None
        lines = [f"{method} {self.prefix}{path} HTTP/1.1\r\n".encode(), self._host_header]
        lines.extend(f"{k}: {v}\r\n".encode() for k, v in headers)
        if body is not None:
            lines.append(f"Content-Length: {len(body)}\r\n".encode())
        lines.append(b"\r\n")
        if body is not None:
            lines.append(body)
        data = b"".join(lines)
        self._buffer.clear()
        self._head = None
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(data)
        self.counters.up += len(data)
        try:
            return await self._waiter
        finally:
            self._waiter = None

    def _parse(self) -> None:
        if self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
            del self._buffer[: end + 4]
            status = int(head[0].split(" ", 2)[1])
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "chunked" in headers.get("transfer-encoding", ""):
                self._fail("chunked responses are not supported")
                return
            length = 0 if status in (204, 304) else int(headers.get("content-length", "0"))
            self._head = (status, headers, length)
        status, headers, length = self._head
        if len(self._buffer) < length:
            return
        body = bytes(self._buffer[:length])
        del self._buffer[:length]
        self._head = None
        if headers.get("connection", "").lower() == "close" and self._transport is not None:
            self._transport.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result((status, headers, body))

    def _fail(self, why: str) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(HttpError(why))

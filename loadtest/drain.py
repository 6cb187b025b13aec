"""Drained observers: real connections that read everything and decode almost nothing.

At thousands of spectators a generator that decodes every DIFF on every
connection saturates long before the server does. Only a sample of observers
(:mod:`statecast.loadtest.observers`) decodes and timestamps every update; the
rest are drained here. Each is a real connection: the full WebSocket handshake
and HELLO (or a real keep-alive ``GET /state`` per poll), every byte the server
sends is read from the socket, and pings are answered, so the server does all
the work a full client would cause. What they record instead of latencies:

* a WebSocket drain walks only the frame headers of what it reads (counting
  frames, answering pings, spotting a SNAPSHOT by its first two bytes) and
  notes the ``seq`` it has reached: at its join, at each SNAPSHOT, and at the
  end (by decoding the last frame only). DIFFs arrive in seq order without gaps
  (PROTOCOL.md), so "every diff from seq ``a`` to ``b``" is exact; when the server
  negotiated permessage-deflate (the handshake offers it, as the sampled observers' and
  browsers' do) each compressed frame is inflated in turn, as the compression context
  runs across frames, and bytes are still counted as they arrive;
* a drained poller reads the seq of each new state from the ETag
  (``"epoch:seq"``) and never parses the body.

:mod:`statecast.loadtest.accounting` turns those seq logs into delivered,
coalesced and missed updates with the agents' (seq, agent, n) list. The sockets
are read in bulk by one :class:`Drainer` per process, a few times a second,
rather than on every frame: per-frame Python work is what saturates a generator.
"""

from __future__ import annotations

import asyncio
import select
import socket
import sys
from typing import Any

from websockets.client import ClientProtocol
from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import enable_client_permessage_deflate
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from statecast.loadtest.measure import Counters
from statecast.loadtest.observers import PollObserver, Tally
from statecast.loadtest.scenario import now_us
from statecast.loadtest.wire import USER_AGENT, negotiated
from statecast.protocol import codec
from statecast.protocol.messages import Diff, Hello, Snapshot, Welcome

SNAPSHOT_HEAD = b"\x94\x03"  # a SNAPSHOT is a msgpack array of 4 starting with type 3
READ_BYTES = 1 << 18
DRAIN_INTERVAL = 0.1
DRAIN_CHUNK = 256  # sockets read per event-loop turn, so one pass never stalls the loop

Seen = list[list[Any]]  # ["state", seq] (a whole state at seq) or ["run", seq] (every diff)


class DrainedSocket:
    """One WebSocket connection read in bulk: frames, bytes, pings, and the seqs reached."""

    __slots__ = (
        "counters",
        "error",
        "fileno",
        "frames",
        "inflate",
        "last_frame",
        "pending",
        "seen",
        "sock",
        "statecast",
    )

    def __init__(self, sock: socket.socket, counters: Counters, *, statecast: bool) -> None:
        self.sock = sock
        self.fileno = sock.fileno()
        self.counters = counters
        self.statecast = statecast  # False for the floors: no HELLO, no seqs
        self.pending = b""
        self.frames = 0
        self.last_frame = b""  # the payload of the last binary frame read
        self.seen: Seen = []
        self.error: str | None = None
        #: permessage-deflate, when the handshake negotiated it: inflates each frame.
        self.inflate: Extension | None = None

    @property
    def compression(self) -> str:
        return negotiated([self.inflate] if self.inflate is not None else [])

    def read(self) -> bool:
        """Read what the socket holds (one recv); False when the connection is gone."""
        try:
            data = self.sock.recv(READ_BYTES)
        except BlockingIOError:
            return True
        except OSError as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            return False
        if not data:
            self.error = "the server closed the connection"
            return False
        self.counters.down += len(data)
        self.walk(self.pending + data if self.pending else data)
        return True

    def walk(self, buf: bytes) -> None:
        """Walk the frame headers in ``buf``; keep an incomplete frame for the next read."""
        i, n = 0, len(buf)
        last_start = last_end = -1
        frames = 0
        while n - i >= 2:
            length = buf[i + 1] & 0x7F
            head = 2
            if length == 126:
                if n - i < 4:
                    break
                length = int.from_bytes(buf[i + 2 : i + 4], "big")
                head = 4
            elif length == 127:
                if n - i < 10:
                    break
                length = int.from_bytes(buf[i + 2 : i + 10], "big")
                head = 10
            start = i + head
            end = start + length
            if end > n:
                break
            opcode = buf[i] & 0x0F
            if opcode == 2 and buf[i] & 0x40 and self.inflate is not None:  # RSV1: deflated
                frames += 1
                # Inflated one by one (the context runs across frames): the last one is kept.
                payload = self._inflated(buf[start:end], fin=bool(buf[i] & 0x80))
                if self.statecast and payload[:2] == SNAPSHOT_HEAD:
                    previous = buf[last_start:last_end] if last_start >= 0 else self.last_frame
                    self._snapshot(previous, payload)
                self.last_frame = payload
                last_start = last_end = -1
            elif opcode == 2:
                frames += 1
                if self.statecast and buf[start : start + 2] == SNAPSHOT_HEAD:
                    previous = buf[last_start:last_end] if last_start >= 0 else self.last_frame
                    self._snapshot(previous, buf[start:end])
                last_start, last_end = start, end
            elif opcode == 9:  # ping: answer with a masked pong, as every client must
                pong = Frame(Opcode.PONG, buf[start:end]).serialize(mask=True)
                self._send(pong)
            elif opcode == 8:
                self.error = "the server closed the connection"
            i = end
        self.frames += frames
        self.counters.frames_down += frames
        if last_start >= 0:
            self.last_frame = buf[last_start:last_end]
        self.pending = buf[i:] if i < n else b""

    def _inflated(self, data: bytes, *, fin: bool) -> bytes:
        assert self.inflate is not None
        if not fin:  # statecast sends each message in one frame
            self.error = "a fragmented compressed message (not read by the drain)"
            return b""
        frame = Frame(Opcode.BINARY, data, fin=True, rsv1=True)
        return bytes(self.inflate.decode(frame).data)

    def _snapshot(self, previous: bytes, payload: bytes) -> None:
        """Skipped ahead: every diff up to ``previous`` arrived, then one state."""
        before = last_seq(previous)
        if before is not None:
            self.seen.append(["run", before])
        for message in codec.decode_server_frame(payload):
            if isinstance(message, Snapshot):
                self.seen.append(["state", message.seq])

    def _send(self, data: bytes) -> None:
        try:
            self.sock.send(data)
        except OSError as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            return
        self.counters.up += len(data)

    def finish(self) -> None:
        """Note the last seq reached, from the last frame read."""
        if self.statecast:
            seq = last_seq(self.last_frame)
            if seq is not None:
                self.seen.append(["run", seq])

    def close(self) -> None:
        self.sock.close()


def last_seq(payload: bytes) -> int | None:
    """The seq of the last DIFF or SNAPSHOT in one frame's payload."""
    if not payload:
        return None
    seq = None
    for message in codec.decode_server_frame(payload):
        if isinstance(message, Diff | Snapshot):
            seq = message.seq
    return seq


async def open_drained(
    url: str, counters: Counters, timeout: float, *, statecast: bool
) -> DrainedSocket:
    """Handshake (websockets' sans-I/O client), HELLO as a spectator, and the first state."""
    loop = asyncio.get_running_loop()
    uri = parse_uri(url)
    protocol = ClientProtocol(uri, extensions=enable_client_permessage_deflate(None))
    request = protocol.connect()
    request.headers["User-Agent"] = USER_AGENT
    protocol.send_request(request)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    drained = DrainedSocket(sock, counters, statecast=statecast)
    try:
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, (uri.host, uri.port))
            await _flush(loop, sock, protocol, counters)
            welcome = await _handshake(loop, sock, protocol, counters, statecast)
    except BaseException:
        sock.close()
        raise
    if protocol.extensions:
        drained.inflate = protocol.extensions[0]
    if welcome is not None:
        drained.seen.append(["state", welcome])
    return drained


async def _flush(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: ClientProtocol, c: Counters
) -> None:
    for chunk in protocol.data_to_send():
        if chunk:
            await loop.sock_sendall(sock, chunk)
            c.up += len(chunk)


async def _handshake(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    protocol: ClientProtocol,
    counters: Counters,
    statecast: bool,
) -> int | None:
    """Read until the upgrade (and, for statecast, WELCOME and its state) is in."""
    upgraded = False
    welcome_seq: int | None = None
    state_seq: int | None = None
    while True:
        data = await loop.sock_recv(sock, READ_BYTES)
        if not data:
            raise ConnectionError("the server closed the connection during the handshake")
        counters.down += len(data)
        protocol.receive_data(data)
        for event in protocol.events_received():
            if isinstance(event, Response):
                if protocol.state is not State.OPEN:
                    raise ConnectionError(f"handshake refused: HTTP {event.status_code}")
                upgraded = True
                if statecast:
                    protocol.send_binary(codec.encode(Hello(v=1, role="spectator")))
                    await _flush(loop, sock, protocol, counters)
            elif isinstance(event, Frame) and event.opcode is Opcode.BINARY:
                counters.frames_down += 1
                for message in codec.decode_server_frame(bytes(event.data)):
                    if isinstance(message, Welcome):
                        welcome_seq = message.seq
                    elif isinstance(message, Snapshot):
                        state_seq = message.seq
        await _flush(loop, sock, protocol, counters)  # pongs, if a ping came in
        if upgraded and not statecast:
            return None
        if welcome_seq is not None:  # a fresh join's WELCOME has its SNAPSHOT in its frame
            return state_seq if state_seq is not None else welcome_seq


class Drainer:
    """Reads every drained socket of one process in bulk, a few times a second."""

    def __init__(self) -> None:
        self.sockets: dict[int, DrainedSocket] = {}
        self.gone: list[DrainedSocket] = []  # closed under it: reported, not read
        self.poller = select.epoll()
        self.errors: list[str] = []

    def all(self) -> list[DrainedSocket]:
        return [*self.sockets.values(), *self.gone]

    def add(self, drained: DrainedSocket) -> None:
        self.sockets[drained.fileno] = drained
        self.poller.register(drained.fileno, select.EPOLLIN)

    async def once(self) -> int:
        """Read every socket that has data, DRAIN_CHUNK per loop turn; return the frames read.

        Only binary frames count: pings keep arriving on an idle connection.
        """
        ready = self.poller.poll(0, max(1, len(self.sockets)))
        sockets = self.sockets
        frames = 0
        for k in range(0, len(ready), DRAIN_CHUNK):
            for fd, _ in ready[k : k + DRAIN_CHUNK]:
                drained = sockets.get(fd)
                if drained is None:
                    continue
                before = drained.frames
                if not drained.read():
                    self._drop(drained)
                frames += drained.frames - before
            await asyncio.sleep(0)
        return frames

    def _drop(self, drained: DrainedSocket) -> None:
        self.poller.unregister(drained.fileno)
        del self.sockets[drained.fileno]
        self.gone.append(drained)
        if drained.error is not None:
            self.errors.append(drained.error)

    async def run(self, until_us: int) -> None:
        while now_us() < until_us:
            await self.once()
            await asyncio.sleep(DRAIN_INTERVAL)

    async def settle(self, quiet: float = 0.3, limit: float = 5.0) -> None:
        """Read until no frame has arrived for ``quiet`` seconds (at most ``limit``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        idle_since = loop.time()
        while loop.time() < deadline and loop.time() - idle_since < quiet:
            if await self.once():
                idle_since = loop.time()
            await asyncio.sleep(0.05)

    def close(self) -> None:
        self.poller.close()


class DrainedPoller(PollObserver):
    """A real keep-alive poller that reads each new state's seq from its ETag only."""

    def __init__(
        self, http_url: str, room: str, hz: float, tally: Tally, counters: Counters, seed: int
    ) -> None:
        super().__init__(http_url, room, hz, tally, counters, seed)
        self.seen: Seen = []
        # Set by its worker once the state holds every action of the window (the sample
        # has seen them all): a poll sent after it is this poller's last.
        self.final_after = sys.maxsize
        self.final = False

    def caught_up(self) -> bool:
        """It cannot count what it missed: it polls until a poll sent after final_after."""
        return self.final

    async def poll(self) -> None:
        sent = now_us()
        status, response_headers, _ = await self.conditional_get()
        if sent >= self.final_after and status in (200, 304):
            self.final = True
        if status != 200:
            return
        etag = response_headers.get("etag")
        if etag is None:
            self.error = "a 200 without an ETag"
            return
        self.etag = etag
        self.seen.append(["state", int(etag.strip('"').rpartition(":")[2])])

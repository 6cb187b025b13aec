"""A fault-injecting TCP proxy for tests: cuts, delays and stalls, driven by a seeded RNG.

The proxy listens on 127.0.0.1 (port 0) and forwards every accepted connection
to one upstream port, byte for byte, in both directions. While ``faults`` is on
it misbehaves the way real networks do:

* **cut**: each connection draws a byte budget; once that many bytes have
  crossed it (either way), it forwards the part of the current chunk that fits
  and aborts both sides, so a cut lands anywhere: in the opening handshake, in
  the middle of a frame, between two messages of one frame;
* **delay**: a chunk waits a few milliseconds before it is forwarded;
* **stall**: the proxy stops reading one direction for a while, so the sender's
  buffers fill up behind it.

Every decision comes from one :class:`random.Random` seeded by the test, so the
faults a run draws are reproducible in kind and number even though the event
loop's interleaving is not. :meth:`FaultProxy.calm` switches the faults off
without touching open connections, so a test can let everyone converge at the
end of a run.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field


@dataclass
class FaultPlan:
    """How often each fault happens. Probabilities are per connection (cut) or per chunk."""

    cut_probability: float = 0.7
    cut_after: tuple[int, int] = (40, 40_000)
    delay_probability: float = 0.1
    delay_seconds: tuple[float, float] = (0.001, 0.02)
    stall_probability: float = 0.02
    stall_seconds: tuple[float, float] = (0.05, 0.3)


@dataclass
class FaultCounts:
    connections: int = 0
    cuts: int = 0
    delays: int = 0
    stalls: int = 0
    bytes_forwarded: int = 0


@dataclass(eq=False)
class _Link:
    """One proxied connection: both transports and what is left of its byte budget."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    budget: int | None
    rng: random.Random
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    cut: bool = False


class FaultProxy:
    def __init__(self, upstream_port: int, *, seed: int, plan: FaultPlan | None = None) -> None:
        self.upstream_port = upstream_port
        self.plan = plan if plan is not None else FaultPlan()
        self.rng = random.Random(seed)
        self.faults = True
        self.counts = FaultCounts()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    def url(self, room: str) -> str:
        return f"ws://127.0.0.1:{self.port}/rooms/{room}"

    async def start(self) -> None:
        """Listen (again, after :meth:`stop`, on the same port: clients find it where it was)."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def calm(self) -> None:
        """Stop injecting faults; open connections carry on undisturbed."""
        self.faults = False

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            self._abort(link)
            for task in link.tasks:
                task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- internals -----------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._handlers.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counts.connections += 1
        # One child RNG per connection, drawn in accept order from the seeded one.
        rng = random.Random(self.rng.getrandbits(64))
        plan = self.plan
        budget = rng.randint(*plan.cut_after) if rng.random() < plan.cut_probability else None
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, up_writer, budget, rng)
        self._links.add(link)
        try:
            link.tasks = [
                asyncio.create_task(self._pump(link, reader, up_writer)),
                asyncio.create_task(self._pump(link, up_reader, writer)),
            ]
            await asyncio.gather(*link.tasks, return_exceptions=True)
        finally:
            for task in link.tasks:
                task.cancel()
            self._abort(link)
            self._links.discard(link)

    async def _pump(
        self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        plan = self.plan
        rng = link.rng
        try:
            while not link.cut:
                data = await reader.read(16_384)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                if self.faults:
                    if rng.random() < plan.stall_probability:
                        self.counts.stalls += 1
                        await asyncio.sleep(rng.uniform(*plan.stall_seconds))
                    elif rng.random() < plan.delay_probability:
                        self.counts.delays += 1
                        await asyncio.sleep(rng.uniform(*plan.delay_seconds))
                if self.faults and link.budget is not None and len(data) >= link.budget:
                    writer.write(data[: link.budget])
                    self.counts.bytes_forwarded += link.budget
                    self.counts.cuts += 1
                    link.cut = True
                    self._abort(link)
                    return
                if link.budget is not None:
                    link.budget -= len(data)
                writer.write(data)
                self.counts.bytes_forwarded += len(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            link.cut = True
            self._abort(link)

    @staticmethod
    def _abort(link: _Link) -> None:
        link.cut = True
        link.client.transport.abort()
        link.upstream.transport.abort()

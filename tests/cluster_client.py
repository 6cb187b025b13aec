"""A client of a whole cluster: the project's sync machine, reconnecting to the next node.

It records what the cluster tests assert: every close code, every seq gap seen
live (a DIFF more than one above the client's seq), every DIFF that arrived twice
(one at or below the client's seq while live: the sync machine would drop it
silently), the ops of every DIFF by (epoch, seq), every epoch, and the outcome of
each of its actions by aid.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgpack
import websockets
from websockets.exceptions import ConnectionClosed

from statecast.protocol import codec
from statecast.protocol.digest import state_digest
from statecast.protocol.messages import Diff, Role, Snapshot
from statecast.protocol.sync import ActionAcked, ActionRejected, ClientSync, Welcomed
from tests.helpers import SCALE


class Roamer:
    def __init__(self, urls: list[str], *, role: Role = "agent", client: str | None = None):
        self.urls = urls
        self.sync = ClientSync(role=role, client=client)
        self.node = 0
        self.closes: list[int] = []
        self.gaps: list[tuple[int, int]] = []
        #: (epoch, seq) of every DIFF received while the client already held that seq.
        self.duplicates: list[tuple[str, int]] = []
        #: The ops of every DIFF received, as msgpack bytes, by (epoch, seq).
        self.diffs: dict[tuple[str, int], bytes] = {}
        self.epochs: list[str] = []
        #: (epoch, seq, state) of every SNAPSHOT received.
        self.snapshots: list[tuple[str, int, dict[str, Any]]] = []
        #: The ``sync`` of every WELCOME: how each (re)connection caught up.
        self.syncs: list[str] = []
        self.outcomes: dict[int, tuple[str, Any]] = {}
        #: When each aid's answer arrived (event loop time).
        self.answered_at: dict[int, float] = {}
        self.connections = 0
        self._ws: Any = None
        self._welcomed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._waiters: dict[int, asyncio.Future[tuple[str, Any]]] = {}
        self._stopping = False

    @property
    def seq(self) -> int:
        return self.sync.seq

    def digest(self) -> str:
        return state_digest(self.sync.state or {})

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._welcomed.wait(), 20)

    async def _run(self) -> None:
        while not self._stopping:
            url = self.urls[self.node % len(self.urls)]
            code = 1006
            try:
                async with websockets.connect(url, max_size=None, open_timeout=5) as ws:
                    self._ws = ws
                    self.connections += 1
                    self.sync.connect()
                    await self._flush()
                    async for frame in ws:
                        assert isinstance(frame, bytes)
                        self._check_gaps(frame)
                        self.sync.receive_frame(frame)
                        self._dispatch()
                        await self._flush()
                    code = ws.close_code or 1006
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else 1006
            except (OSError, TimeoutError, websockets.InvalidHandshake):
                code = 1006
            finally:
                self._ws = None
                self.sync.connection_lost()
            if self._stopping:
                return
            self.closes.append(code)
            self.node += 1  # any node of the cluster will do
            await asyncio.sleep(0.05)

    def _check_gaps(self, frame: bytes) -> None:
        messages = codec.decode_server_frame(frame)
        self.snapshots += [(m.epoch, m.seq, m.state) for m in messages if isinstance(m, Snapshot)]
        if not self.sync.live:
            return
        seq = self.sync.seq
        epoch = self.sync.epoch or ""
        for message in messages:
            if isinstance(message, Diff):
                if message.seq > seq + 1:
                    self.gaps.append((seq, message.seq))
                elif message.seq <= seq:
                    self.duplicates.append((epoch, message.seq))
                self.diffs.setdefault(
                    (epoch, message.seq), msgpack.packb(message.ops, use_bin_type=True)
                )
                seq = max(seq, message.seq)
            else:
                return  # a SNAPSHOT or WELCOME: the sync machine takes it from here

    def _dispatch(self) -> None:
        for event in self.sync.events_received():
            if isinstance(event, Welcomed):
                self.syncs.append(event.welcome.sync)
            elif isinstance(event, ActionAcked):
                self._settle(event.aid, ("ack", event.seq))
            elif isinstance(event, ActionRejected):
                self._settle(event.aid, ("error", event.code))
        if self.sync.epoch is not None and (not self.epochs or self.epochs[-1] != self.sync.epoch):
            self.epochs.append(self.sync.epoch)
        if self.sync.welcomed:
            self._welcomed.set()

    def _settle(self, aid: int, outcome: tuple[str, Any]) -> None:
        self.outcomes[aid] = outcome
        self.answered_at[aid] = asyncio.get_running_loop().time()
        waiter = self._waiters.pop(aid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(outcome)

    async def _flush(self) -> None:
        data = self.sync.data_to_send()
        if self._ws is not None and data:
            with contextlib.suppress(ConnectionClosed):
                await self._ws.send(b"".join(data))

    async def act(self, name: str, args: Any) -> tuple[str, Any]:
        """Send an action; its outcome: ("ack", seq | None) or ("error", code)."""
        aid = self.sync.act(name, args)
        waiter: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[aid] = waiter
        await self._flush()
        return await asyncio.wait_for(waiter, 30 * SCALE)

    def send(self, name: str, args: Any) -> int:
        """Send an action without waiting (pipelining); its outcome lands in ``outcomes``."""
        aid = self.sync.act(name, args)
        asyncio.get_running_loop().create_task(self._flush())
        return aid

    def drop(self) -> None:
        """Cut the current connection (no close frame): it reconnects to the next node."""
        if self._ws is not None:
            self._ws.transport.abort()

    async def close(self) -> None:
        self._stopping = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._task is not None:
            self._task.cancel()
            # A reader that died of anything but the cancel (a frame that is not binary, a
            # gap check or sync error) fails the test here rather than passing unseen.
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

"""A room held in memory: its action pipeline, history, subscribers and catch-up.

Actions from every connection (and from HTTP) go into one inbox per room. A
single worker task takes everything queued as one batch and:

1. runs each action through the room (all or nothing per action), numbering
   each diff ``seq = previous + 1`` and recording each client's last aid;
2. hands the batch to the store (``--durability ack``: and waits for it);
3. publishes: appends the diffs to the history, moves the head, and writes one
   frame per subscriber holding every diff of the batch — plus, for the agents
   that acted, their ACK/ERROR after the diffs, so an agent always sees its
   DIFF before its ACK.

So when actions arrive faster than one pass completes, the next pass carries
all of them: one write per subscriber per pass, not per diff, and no added
delay when the room is idle.

Joins, resyncs and HTTP reads need the state and the head to agree; they wait
for :meth:`LiveRoom.settled` (no batch between apply and publish) and then do
their work without awaiting, so nothing can interleave with a fan-out pass.
That is what makes the switch from replay to live gap-free: the catch-up and
the subscription happen in one synchronous step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
import structlog

from statecast.protocol import codec
from statecast.protocol.digest import state_digest
from statecast.protocol.errors import Rejection
from statecast.protocol.messages import Ack, Error, Welcome
from statecast.server.config import Config
from statecast.server.fanout import Subscriber, close_or_abort, frame_binary
from statecast.server.history import History
from statecast.server.metrics import Metrics
from statecast.server.room import Room
from statecast.server.roster import Roster
from statecast.server.store.base import Store, StoredChange

log = structlog.get_logger()

REPLAY_CHUNK_BYTES = 256 * 1024
MAX_UNWRITTEN = 10_000


@dataclass(slots=True)
class Request:
    """An action waiting in a room's inbox."""

    client: str
    aid: int
    name: str
    args: Any
    reply: Subscriber | asyncio.Future[int | None]
    received: float


class RoomFailed(Exception):
    """The room's store failed; the room is unloaded and reloaded from the store."""


class LiveRoom:
    def __init__(
        self,
        name: str,
        room: Room,
        *,
        epoch: str,
        head: int,
        acked: dict[str, int],
        history: History,
        store: Store,
        config: Config,
        metrics: Metrics,
    ) -> None:
        self.name = name
        self.room = room
        room.set_limits(
            max_depth=config.max_depth,
            max_key_length=config.max_key_length or None,
            max_state_bytes=config.max_state_bytes or None,
        )
        self.epoch = epoch
        self.head = head
        self.acked = acked
        self.history = history
        self.store = store
        self.config = config
        self.metrics = metrics
        self.members: dict[Subscriber, None] = {}
        self.connections = 0
        self.roster = Roster()
        self.failed: BaseException | None = None
        self.lost_writes = False  # async durability: published diffs the store did not keep
        self._applied = head
        self._since_checkpoint = 0
        self._inbox: list[Request] = []
        self._wake = asyncio.Event()
        self._busy = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._snapshot: tuple[int, bytes] | None = None
        self._state_json: tuple[int, bytes] | None = None
        self._digest: tuple[int, str] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._unwritten: list[StoredChange] = []
        self._write_chain: asyncio.Task[None] | None = None
        self._worker = asyncio.create_task(self._work(), name=f"room {name}")

    # --- actions -------------------------------------------------------------------------

    def submit(self, request: Request) -> None:
        if self.failed is not None:
            raise RoomFailed(str(self.failed))
        self._inbox.append(request)
        self._wake.set()

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.failed is not None:
                return
            if not self._inbox:
                continue
            batch, self._inbox = self._inbox, []
            self._busy = True
            self._idle.clear()
            try:
                await self._process(batch)
            except Exception as exc:
                log.exception("room failed", room=self.name)
                self._fail(exc, batch)
                return
            finally:
                self._busy = False
                self._idle.set()
            # Let joins and reads that waited for the publish run before the next batch.
            await asyncio.sleep(0)

    async def _process(self, batch: list[Request]) -> None:
        changes: list[StoredChange] = []
        outcomes: list[tuple[Request, int | None, Rejection | None]] = []
        diffs: list[tuple[int, bytes]] = []
        for req in batch:
            if req.aid <= self.acked.get(req.client, 0):
                outcomes.append((req, None, None))
                self.metrics.actions.labels("duplicate").inc()
                continue
            self.acked[req.client] = req.aid
            try:
                parts = self.room.run_action(req.client, req.name, req.args)
            except Rejection as exc:
                rejection: Rejection | None = exc
            except Exception:
                log.exception("room handler raised", room=self.name, action=req.name)
                rejection = Rejection("invalid", f"action {req.name!r} failed in the room")
            else:
                rejection = None
            if rejection is not None:
                changes.append(StoredChange(self._applied, None, req.client, req.aid))
                outcomes.append((req, None, rejection))
                self.metrics.actions.labels("rejected").inc()
                continue
            encoded: bytes | None = None
            if parts:
                self._applied += 1
                encoded = codec.encode_diff_parts(self._applied, parts)
                diffs.append((self._applied, encoded))
            changes.append(StoredChange(self._applied, encoded, req.client, req.aid))
            outcomes.append((req, self._applied, None))
            self.metrics.actions.labels("applied").inc()
        if changes:
            await self._persist(changes)
        self._publish(diffs, outcomes)
        if diffs:
            self._since_checkpoint += len(diffs)
            if self._since_checkpoint >= self.config.checkpoint_every:
                await self._write_checkpoint()  # the worker: settled() would wait on itself

    async def _persist(self, changes: list[StoredChange]) -> None:
        if self.config.durability == "ack" or not self.store.durable:
            t0 = time.perf_counter()
            await self.store.append(self.name, changes)
            self.metrics.commit_seconds.observe(time.perf_counter() - t0)
            return
        # async durability: publish now, write behind. One writer per room appends
        # everything published since its last append, so the store sees the batches
        # in seq order, one append in flight per room. A failed write fails the room
        # (clients saw diffs the store lost). Past MAX_UNWRITTEN changes the worker
        # waits for the writer to catch up.
        writer = self._write_chain
        if writer is not None and writer.done() and not writer.cancelled() and writer.exception():
            raise RoomFailed("an earlier write failed")  # appending now would leave a gap
        self._unwritten.extend(changes)
        if self._write_chain is None or self._write_chain.done():
            self._write_chain = asyncio.create_task(self._write_behind())
            self._write_chain.add_done_callback(self._written)
        if len(self._unwritten) > MAX_UNWRITTEN:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._write_chain)
            if self.failed is not None:  # that write failed: this batch must not be answered
                raise RoomFailed(str(self.failed))

    async def _write_behind(self) -> None:
        while self._unwritten:
            changes, self._unwritten = self._unwritten, []
            await self.store.append(self.name, changes)

    def _written(self, task: asyncio.Task[None]) -> None:
        exc = None if task.cancelled() else task.exception()
        if exc is None:
            return
        # Even when the room already failed (the next batch can find the failed write
        # before this callback runs): clients saw diffs the store lost, so a new epoch.
        self.lost_writes = True
        if self.failed is None:
            log.error("store write failed after publish", room=self.name, error=repr(exc))
            self._fail(exc, [])

    def _publish(
        self,
        diffs: list[tuple[int, bytes]],
        outcomes: list[tuple[Request, int | None, Rejection | None]],
    ) -> None:
        for diff_seq, encoded in diffs:
            self.history.append(diff_seq, encoded)
        self.head = self._applied
        shared = b"".join(encoded for _, encoded in diffs)
        extras: dict[Subscriber, list[bytes]] = {}
        for req, seq, rejection in outcomes:
            if isinstance(req.reply, Subscriber):
                message: Ack | Error = (
                    Error(req.aid, rejection.code, rejection.message)
                    if rejection is not None
                    else Ack(req.aid, seq)
                )
                extras.setdefault(req.reply, []).append(codec.encode(message))
            elif not req.reply.done():
                if rejection is not None:
                    req.reply.set_exception(rejection)
                else:
                    req.reply.set_result(seq)
        if diffs:
            self._snapshot = None
            self.metrics.diffs.inc(len(diffs))
            self._fanout(shared, extras)
        for sub, messages in extras.items():
            if sub.lagging:
                # Its DIFFs were skipped: the ACK waits for the SNAPSHOT that holds them.
                sub.held.extend(messages)
            else:
                sub.send(b"".join(messages))
        now = time.perf_counter()
        for req, _, _ in outcomes:
            self.metrics.fanout_latency.observe(now - req.received)

    def _fanout(self, shared: bytes, extras: dict[Subscriber, list[bytes]]) -> None:
        """One write per subscriber; an acting agent's ACKs ride in the same frame."""
        frame = frame_binary(shared)
        high_water = self.config.slow_high_water
        lagging: list[Subscriber] = []
        for sub in self.members:
            if sub.backlog() > high_water:
                lagging.append(sub)
                continue
            own = extras.pop(sub, None)
            if own is None:
                sub.send(shared, frame)
            else:
                sub.send(b"".join((shared, *own)))
        for sub in lagging:
            self.skip_ahead(sub)
        n = len(self.members)
        self.metrics.frames_sent.inc(n)
        self.metrics.bytes_sent.inc(len(shared) * n)

    # --- slow subscribers ----------------------------------------------------------------

    def skip_ahead(self, sub: Subscriber) -> None:
        sub.lagging = True
        self.members.pop(sub, None)
        self.metrics.slow_skips.inc()
        log.info("subscriber lagging", room=self.name, conn=sub.id, backlog=sub.backlog())
        task = asyncio.create_task(self._recover(sub))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _recover(self, sub: Subscriber) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.slow_timeout
        low_water = self.config.slow_high_water // 4
        while sub.open and sub.backlog() > low_water:
            if loop.time() > deadline:
                log.info("slow consumer closed", room=self.name, conn=sub.id)
                self.metrics.closes.labels("4008").inc()
                # It gets slow_timeout to take the close frame too.
                await close_or_abort(sub.conn, 4008, "slow consumer", self.config.slow_timeout)
                return
            await asyncio.sleep(0.05)
        try:
            await self.settled()
        except RoomFailed:
            # _fail closed the members; a lagging subscriber is not one of them.
            await close_or_abort(sub.conn, 1011, "room failed", self.config.slow_timeout)
            return
        held, sub.held = sub.held, []
        if not sub.open or not sub.lagging:
            return
        sub.send(b"".join((self.snapshot_bytes(), *held)))
        sub.lagging = False
        self.members[sub] = None

    # --- joins and resyncs ---------------------------------------------------------------

    async def settled(self) -> None:
        """Return at a moment when the state and the published head agree."""
        while self._busy:
            await self._idle.wait()
        if self.failed is not None:
            raise RoomFailed(str(self.failed))

    def snapshot_bytes(self) -> bytes:
        """The encoded SNAPSHOT at the head (call when settled); cached until the next diff."""
        if self._snapshot is None or self._snapshot[0] != self.head:
            self._snapshot = (
                self.head,
                codec.encode_snapshot(self.epoch, self.head, self.room.state),
            )
        return self._snapshot[1]

    def plan_sync(self, resume: tuple[str, int] | None) -> str:
        """PROTOCOL.md: current at the head; replay when held and smaller; else snapshot."""
        if resume is None:
            return "snapshot"
        epoch, seq = resume
        if epoch != self.epoch or seq > self.head:
            return "snapshot"
        if seq == self.head:
            return "current"
        if self.history.holds_after(seq) and self.history.size_after(seq) < len(
            self.snapshot_bytes()
        ):
            return "replay"
        return "snapshot"

    def _catch_up(self, sync: str, since: int, lead: bytes = b"") -> Iterator[bytes]:
        """Payloads that bring a subscriber from ``since`` to the head (``lead`` first)."""
        if sync == "snapshot":
            yield lead + self.snapshot_bytes()
            return
        chunk = [lead] if lead else []
        size = len(lead)
        if sync == "replay":
            for _, encoded in self.history.after(since):
                if size + len(encoded) > REPLAY_CHUNK_BYTES and chunk:
                    yield b"".join(chunk)
                    chunk, size = [], 0
                chunk.append(encoded)
                size += len(encoded)
        if chunk:
            yield b"".join(chunk)

    async def join(self, sub: Subscriber, resume: tuple[str, int] | None) -> Welcome:
        await self.settled()
        sync = self.plan_sync(resume)
        acked = 0
        if sub.role == "agent" and sub.client is not None:  # "" is a client id too
            acked = self.acked.get(sub.client, 0)
        welcome = Welcome(self.epoch, self.head, sub.role, sub.client, acked, sync)  # type: ignore[arg-type]
        since = resume[1] if resume is not None else 0
        for payload in self._catch_up(sync, since, codec.encode(welcome)):
            sub.send(payload)
        self.members[sub] = None
        self.metrics.resumes.labels(sync).inc()
        return welcome

    async def resync(self, sub: Subscriber, epoch: str, seq: int) -> str:
        await self.settled()
        if sub.lagging or sub not in self.members:
            return "snapshot"  # a SNAPSHOT is on its way already
        sync = self.plan_sync((epoch, seq))
        for payload in self._catch_up(sync, seq):
            sub.send(payload)
        self.metrics.resumes.labels(sync).inc()
        return sync

    def leave(self, sub: Subscriber) -> None:
        self.members.pop(sub, None)
        sub.lagging = False

    # --- reads for HTTP ------------------------------------------------------------------

    @property
    def etag(self) -> str:
        return f'"{self.epoch}:{self.head}"'

    async def state_json(self) -> tuple[str, bytes]:
        """(ETag, JSON body of /state) at one instant; the body is cached per head."""
        await self.settled()
        if self._state_json is None or self._state_json[0] != self.head:
            body = {"epoch": self.epoch, "seq": self.head, "state": self.room.state}
            self._state_json = (self.head, json.dumps(body, separators=(",", ":")).encode())
        return self.etag, self._state_json[1]

    def digest(self) -> str:
        """SHA-256 of the JCS form of the state at the head (call when settled)."""
        if self._digest is None or self._digest[0] != self.head:
            self._digest = (self.head, state_digest(self.room.state))
        return self._digest[1]

    @property
    def oldest(self) -> int:
        oldest = self.history.oldest_seq
        return oldest - 1 if oldest is not None else self.head

    def changes_after(self, since: int, limit: int) -> list[dict[str, Any]]:
        out = []
        for seq, encoded in self.history.after(since, limit):
            _, _, ops = msgpack.unpackb(encoded, raw=False)
            out.append({"seq": seq, "ops": ops})
        return out

    # --- lifecycle -----------------------------------------------------------------------

    async def drain(self) -> None:
        """Wait until every action submitted so far is processed and written."""
        while self._inbox or self._busy:
            if self._worker.done():
                break
            self._wake.set()
            await asyncio.sleep(0.001)
        if self._write_chain is not None:
            with contextlib.suppress(Exception):  # a failed write has failed the room
                await self._write_chain

    async def checkpoint(self) -> None:
        await self.settled()
        await self._write_checkpoint()

    async def _write_checkpoint(self) -> None:
        if self._write_chain is not None:
            await self._write_chain
        state = msgpack.packb(self.room.state, use_bin_type=True)
        self.room.state_bytes = len(state)  # the running estimate, made exact again
        await self.store.checkpoint(self.name, self.head, state, dict(self.acked))
        self._since_checkpoint = 0

    async def close(self) -> None:
        try:
            await self.drain()
            if self.failed is None:
                await self.checkpoint()
        finally:  # a failed checkpoint must not leave the worker and its tasks running
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            for task in list(self._tasks):
                task.cancel()

    def _fail(self, exc: BaseException, batch: list[Request]) -> None:
        self.failed = exc
        self._wake.set()  # the worker, if it waits for work, sees the failure and ends
        for req in batch + self._inbox:
            if isinstance(req.reply, asyncio.Future) and not req.reply.done():
                req.reply.set_exception(RoomFailed(str(exc)))
        self._inbox.clear()
        for sub in list(self.members):
            closing = close_or_abort(sub.conn, 1011, "room failed", self.config.slow_timeout)
            task = asyncio.create_task(closing)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self.members.clear()

"""Rooms in memory: loading from the store, creating on first join, unloading, closing.

A room is idle when nothing is connected, queued or within a leave grace. An
idle room is unloaded (checkpointed, its memory freed) once it has had no
request for ``--idle-unload`` seconds, so a long-running server's memory follows
its active rooms. At most ``--max-rooms`` rooms are held: a room needed past that
makes space by unloading the least recently used idle one at once. Only when
every held room is busy is a new room refused. An unloaded room loads from the
store again on its next use, on the same epoch.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import time
from typing import TYPE_CHECKING, Any

import msgpack
import structlog

from statecast.protocol import ops
from statecast.protocol.errors import NoSuchRoom, Rejection
from statecast.server.config import Config
from statecast.server.epoch import restarted, starting
from statecast.server.feed import RoomFailed, RoomFeed
from statecast.server.history import MIN_HISTORY_BYTES, History
from statecast.server.live import LiveRoom
from statecast.server.metrics import Metrics
from statecast.server.quotas import Quotas, StoreBounds, requester
from statecast.server.registry import RoomTypeMissing, RoomTypes, type_name
from statecast.server.room import Room
from statecast.server.store.base import RoomRecord, Store
from statecast.server.writer import RoomWriter, WriterHooks

if TYPE_CHECKING:
    from statecast.server.cluster.node import ClusterNode

log = structlog.get_logger()


class RoomManager:
    def __init__(self, config: Config, store: Store, room_types: RoomTypes, metrics: Metrics):
        self.config = config
        self.store = store
        self.room_types = room_types
        self.metrics = metrics
        self.rooms: dict[str, LiveRoom] = {}
        self._loading: dict[str, asyncio.Task[LiveRoom | None]] = {}
        self._creating: set[str] = set()
        self.closing = False
        self._lost: set[str] = set()  # rooms whose published history the store lost
        self._type_missing: set[str] = set()  # rooms logged as of a type not registered
        self._unloading: dict[str, asyncio.Task[None]] = {}
        self._waiters: collections.Counter[str] = collections.Counter()
        self._sweeper: asyncio.Task[None] | None = None
        #: Set by the app when the store is shared by a cluster (server/cluster/node.py).
        self.cluster: ClusterNode | None = None
        #: Per-identity quotas and the store's bounds (server/quotas.py), set by the app.
        self.quotas: Quotas | None = None
        self.bounds: StoreBounds | None = None

    async def get(self, name: str, *, create: bool) -> LiveRoom | None:
        """The live room ``name``, loaded from the store or created if asked; None if absent."""
        if self.closing:
            raise RoomFailed("the server is shutting down")
        live = self.rooms.get(name)
        if live is not None and live.failed is None:
            self.rooms[name] = self.rooms.pop(name)  # most recently used last
            live.touch()
            return live
        if live is not None:
            del self.rooms[name]
            if live.writer is not None and live.writer.lost_writes:
                self._lost.add(name)
        task = self._loading.get(name)
        if task is None:
            task = asyncio.create_task(self._load(name, create))
            self._loading[name] = task
            task.add_done_callback(lambda _: self._forget_load(name))
        # Counted while waiting, so the loaded room is not unloaded as idle in the loop
        # turn between the load finishing and this caller attaching to it.
        self._waiters[name] += 1
        try:
            live = await asyncio.shield(task)
        finally:
            self._waiters[name] -= 1
            if not self._waiters[name]:
                del self._waiters[name]
        if live is None and create:
            return await self.get(name, create=True)
        return live

    def _forget_load(self, name: str) -> None:
        self._loading.pop(name, None)
        self._creating.discard(name)

    async def require(self, name: str, *, create: bool) -> LiveRoom:
        live = await self.get(name, create=create)
        if live is None:
            raise NoSuchRoom(f"no room {name!r}")
        return live

    async def _load(self, name: str, create: bool) -> LiveRoom | None:
        unloading = self._unloading.get(name)
        if unloading is not None:  # its last checkpoint must be in the store first
            await asyncio.shield(unloading)
        if self.cluster is not None:
            return await self.cluster.load(name, create)
        record = await self.store.load(name)
        if record is not None:
            record = await self.continued(name, record)
        if record is None:
            if not create:
                return None
            record = self.new_record(name)
            await self.store.create(name, record)
            log.info("room created", room=name, epoch=record.epoch, type=record.type_name)
        else:
            self.make_space()
        room, history = await self.rebuild(name, record)
        feed = self.make_feed(name, room.state, record, history)
        return self.hold(LiveRoom(feed, self.make_writer(feed, room)))

    def make_space(self) -> None:
        """A stored room always loads; past --max-rooms it only makes space if it can."""
        if len(self.rooms) >= self.config.max_rooms:
            self._unload_idle()

    def new_record(self, name: str) -> RoomRecord:
        """The record of a room about to be created; refused past --max-rooms of busy rooms."""
        # Rooms being created count too: loads await the store, so checking
        # self.rooms alone let concurrent creations all pass.
        creating = sum(1 for n in self._creating if n not in self.rooms)
        if len(self.rooms) + creating >= self.config.max_rooms and not self._unload_idle():
            raise Rejection("unavailable", "the server holds its maximum number of busy rooms")
        refusal = self.bounds.creation_refused() if self.bounds is not None else None
        if refusal is not None:
            self.metrics.quota_refusals.labels("store").inc()
            raise Rejection("unavailable", refusal)
        if self.quotas is not None:
            refusal = self.quotas.create_room(requester.get())
            if refusal is not None:
                raise Rejection("rate_limited", refusal)
        self._creating.add(name)
        room_class = self.room_types.for_room(name)
        room = room_class(name)
        return starting(
            type_name(room_class),
            msgpack.packb(room.state, use_bin_type=True),
        )

    async def rebuild(self, name: str, record: RoomRecord) -> tuple[Room, History]:
        """The room at the record's head (checkpoint, then the log) and its replay history.

        Its type is the one it was created as (:class:`RoomTypeMissing` if that is not
        registered here), never another that its name now maps to."""
        try:
            room_class = self.room_types.for_stored(name, record.type_name)
        except RoomTypeMissing:
            if name not in self._type_missing:
                self._type_missing.add(name)
                log.error(
                    "room type not registered: the room is not served",
                    room=name,
                    type=record.type_name,
                )
            raise
        room = room_class(name, msgpack.unpackb(record.checkpoint_state, raw=False))
        history = History(
            self.config.history_diffs,
            self.config.history_bytes,
            self.config.tombstone_horizon,
            room_class.catchup_depth,
        )
        tail = await self._log_tail(name, record.checkpoint_seq)
        history.reset(tail[0][0] - 1 if tail else record.checkpoint_seq)
        for seq, encoded in tail:
            history.append(seq, encoded)
            # Below the checkpoint: already in the state, and in the net-change index too,
            # so that a client from before a restart gets the net change (§5.11).
            history.index.record_ops(seq, msgpack.unpackb(encoded, raw=False)[2])
        for seq, encoded in record.diffs:
            _, diff_seq, diff_ops = msgpack.unpackb(encoded, raw=False)
            if diff_seq != seq:
                raise RuntimeError(f"room {name}: log entry {seq} holds diff {diff_seq}")
            ops.apply_wire_ops(room.state, diff_ops, room.max_depth)
            history.index.record_ops(seq, diff_ops)
            history.append(seq, encoded)
        # As a live room does after each batch: diffs past the state's own size would cost
        # more to replay than a SNAPSHOT, so a reloaded small room holds kilobytes too.
        history.trim_to(max(MIN_HISTORY_BYTES, len(msgpack.packb(room.state, use_bin_type=True))))
        return room, history

    def make_feed(
        self, name: str, state: dict[str, Any], record: RoomRecord, history: History
    ) -> RoomFeed:
        feed = RoomFeed(
            name,
            state,
            epoch=record.epoch,
            head=record.head,
            acked=dict(record.acked),
            history=history,
            config=self.config,
            metrics=self.metrics,
            type_name=record.type_name,
            # rebuild() found the type: it is registered here.
            private=self.room_types.for_stored(name, record.type_name).private,
        )
        feed.answers = dict(record.answers)
        return feed

    def make_writer(
        self, feed: RoomFeed, room: Room, hooks: WriterHooks | None = None
    ) -> RoomWriter:
        return RoomWriter(
            feed,
            room,
            store=self.store,
            config=self.config,
            metrics=self.metrics,
            hooks=hooks,
            bounds=self.bounds,
        )

    def hold(self, live: LiveRoom) -> LiveRoom:
        self.rooms[live.name] = live
        self.metrics.rooms.set(len(self.rooms))
        if self._sweeper is None and self.config.idle_unload > 0:
            self._sweeper = asyncio.create_task(self._sweep(), name="idle rooms")
        return live

    async def _log_tail(self, name: str, checkpoint_seq: int) -> list[tuple[int, bytes]]:
        """Logged diffs up to the checkpoint, if the store kept them: replay across restarts."""
        if checkpoint_seq == 0:
            return []
        low = max(0, checkpoint_seq - self.config.history_diffs)
        tail = [(s, d) for s, d in await self.store.diffs_after(name, low) if s <= checkpoint_seq]
        if not tail or tail[-1][0] != checkpoint_seq:
            return []
        start = len(tail) - 1  # keep the unbroken run that ends at the checkpoint
        while start > 0 and tail[start - 1][0] == tail[start][0] - 1:
            start -= 1
        return tail[start:]

    async def _sweep(self) -> None:
        """Unload the rooms idle for ``--idle-unload`` seconds, looking a few times a period."""
        idle = self.config.idle_unload
        while not self.closing:
            await asyncio.sleep(min(idle / 4, 5.0))
            now = time.monotonic()
            for name, live in list(self.rooms.items()):
                if live.idle and now - live.last_active >= idle and self._unloadable(name):
                    self._start_unload(name, live)

    def _unloadable(self, name: str) -> bool:
        """Not being loaded, and no caller is waiting to be handed it."""
        return name not in self._loading and name not in self._waiters

    def _unload_idle(self) -> bool:
        """Start unloading the least recently used idle room; False if every room is busy."""
        for name, live in self.rooms.items():
            if live.idle and self._unloadable(name):
                self._start_unload(name, live)
                return True
        return False

    def _start_unload(self, name: str, live: LiveRoom) -> None:
        # Out of self.rooms at once (synchronously), so no request reaches it any more;
        # _load waits for the task before it loads the room again.
        del self.rooms[name]
        self.metrics.rooms.set(len(self.rooms))
        task = asyncio.create_task(self._unload(name, live))
        self._unloading[name] = task
        task.add_done_callback(functools.partial(self._forget_unload, name))

    def _forget_unload(self, name: str, _: object) -> None:
        self._unloading.pop(name, None)

    async def _unload(self, name: str, live: LiveRoom) -> None:
        try:
            await live.close()
            if self.cluster is not None:
                await self.cluster.unloaded(live)  # lease released, channels left
            log.info("room unloaded", room=name, seq=live.feed.head)
        except Exception:
            log.exception("room unload failed", room=name)
            if live.writer is not None and live.writer.lost_writes:
                self._lost.add(name)

    async def drain(self) -> None:
        await asyncio.gather(*(room.drain() for room in self.rooms.values()))

    async def continued(self, name: str, record: RoomRecord) -> RoomRecord:
        """The stored room as it may go on: on a new epoch when clients saw diffs the store
        lost (a failed write behind an async publish), else as it is."""
        if name in self._lost:
            return await self._new_epoch(name, record)
        return record

    async def _new_epoch(self, name: str, record: RoomRecord) -> RoomRecord:
        """Clients saw diffs the store lost: the history cannot continue on this epoch, so
        the stored head becomes seq 0 of a new one."""
        fresh = restarted(record)
        await self.store.create(name, fresh)
        self._lost.discard(name)
        log.warning(
            "room starts a new epoch after a lost write",
            room=name,
            epoch=fresh.epoch,
            old_epoch=record.epoch,
            old_head=record.head,
        )
        return fresh

    async def close(self) -> None:
        self.closing = True  # a late HTTP action must not load a room the store will not see
        if self._sweeper is not None:
            self._sweeper.cancel()
        await asyncio.gather(*self._unloading.values(), return_exceptions=True)
        for name, room in list(self.rooms.items()):
            if room.writer is not None and room.writer.lost_writes:
                self._lost.add(name)
            try:
                await room.close()
            except Exception:
                log.exception("room close failed", room=name)
        for name in list(self._lost):  # not reloaded since: the next run must not resume them
            try:
                record = await self.store.load(name)
                if record is not None:
                    await self._new_epoch(name, record)
            except Exception:
                log.exception("could not start a new epoch", room=name)
        self.rooms.clear()
        self.metrics.rooms.set(0)

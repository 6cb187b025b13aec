"""A follower: the feed of a room that another node owns, kept in step from Redis.

The owner's append script publishes each written batch on the room's feed
channel, in log order. A follower applies a batch that starts at its own head
to its state copy and publishes the very bytes the owner encoded to its local
members (encode once, one write per subscriber, as on the owner). Anything else
is a sign of a gap (the bus dropped, Redis cut a slow subscriber, the follower
joined mid-batch) and is repaired from the log: the Stream's diffs after the
head when they reach it, else the checkpoint and a SNAPSHOT to every member
(for a new epoch whose start this copy missed: a SNAPSHOT of its seq 0, then
its diffs).
A periodic check of the head catches what no message announced.

Answers to actions this node forwarded wait here until the feed has published
the diff they name, so a connection sees its DIFF before its ACK.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import structlog

from statecast.protocol import ops
from statecast.server.feed import RoomFailed, RoomFeed
from statecast.server.store.base import RoomRecord, StoreUnavailable
from statecast.server.store.redis import RedisStore

log = structlog.get_logger()

#: Rebuilds a feed's parts from a record: (state, history) at the record's head.
Rebuild = Callable[[str, RoomRecord], Awaitable[tuple[dict[str, Any], Any]]]


@dataclass(slots=True)
class Answer:
    """An outcome from the owner, to deliver once the feed holds ``seq`` of ``epoch``."""

    epoch: str
    seq: int | None
    deliver: Callable[[], None]


def split_batch(shared: bytes) -> list[tuple[int, bytes, Any]]:
    """(seq, encoded DIFF, ops) for each DIFF in a batch's concatenated bytes."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(shared)
    out = []
    start = 0
    for message in unpacker:
        end = unpacker.tell()
        out.append((int(message[1]), shared[start:end], message[2]))
        start = end
    return out


class Follower:
    def __init__(self, feed: RoomFeed, store: RedisStore, rebuild: Rebuild) -> None:
        self.feed = feed
        self.store = store
        self.rebuild = rebuild
        self.answers: collections.deque[Answer] = collections.deque()
        self._repairing = False
        self._again = False
        self.closed = False

    @property
    def name(self) -> str:
        return self.feed.name

    # --- batches from the owner ----------------------------------------------------------

    def on_batch(self, payload: list[Any]) -> None:
        epoch, previous, _last, shared, acked = payload
        feed = self.feed
        if self._repairing or feed.busy:  # busy: a writer that just lost the room is
            self.repair_soon()  # finishing its batch; the repair reads the log after it
            return
        if epoch != feed.epoch or previous > feed.head:
            self.repair_soon()
            return
        if previous < feed.head:
            return  # already held (a repair got there first)
        self._apply(split_batch(shared) if shared else [], acked)

    def _apply(self, diffs: list[tuple[int, bytes, Any]], acked: dict[str, int]) -> None:
        feed = self.feed
        index = feed.history.index
        for seq, _, diff_ops in diffs:
            ops.apply_wire_ops(feed.state, diff_ops, feed.config.max_depth)
            index.record_ops(seq, diff_ops)
        feed.acked.update(acked)
        feed.publish([(seq, encoded) for seq, encoded, _ in diffs], {})
        self.deliver_answers()

    # --- answers to forwarded actions ----------------------------------------------------

    def answer(self, epoch: str, seq: int | None, deliver: Callable[[], None]) -> None:
        self.answers.append(Answer(epoch, seq, deliver))
        self.deliver_answers()

    def deliver_answers(self) -> None:
        feed = self.feed
        while self.answers:
            first = self.answers[0]
            if first.seq is not None and (first.epoch != feed.epoch or first.seq > feed.head):
                return
            self.answers.popleft()
            first.deliver()

    def release_answers(self) -> None:
        """Deliver every held answer now (the feed moved to a line where they cannot wait)."""
        while self.answers:
            self.answers.popleft().deliver()

    # --- repair --------------------------------------------------------------------------

    def repair_soon(self) -> None:
        if self._repairing:
            self._again = True
            return
        self.feed.spawn(self.repair())

    async def repair(self) -> None:
        """Bring the feed to Redis' head: the log's diffs if they reach, else a SNAPSHOT."""
        if self._repairing:
            self._again = True
            return
        self._repairing = True
        try:
            while True:
                self._again = False
                await self.feed.settled()  # a writer's batch in flight ends first
                await self._repair_once()
                if not self._again or self.closed:
                    return
        except StoreUnavailable as exc:
            log.info("follower repair waits for redis", room=self.name, error=str(exc))
        except RoomFailed:
            pass  # the room closed its members; it reloads on the next request
        finally:
            self._repairing = False

    async def catch_up(self) -> None:
        """One repair pass, now (the caller holds the lease: nothing moves meanwhile)."""
        await self._repair_once()

    async def _repair_once(self) -> None:
        feed = self.feed
        info = await self.store.head(self.name)
        if info is None:
            return  # the keys are gone: the owner writes them back, a later check finds them
        epoch, head = info
        if epoch == feed.epoch:
            if head <= feed.head:
                return
            entries = await self.store.diffs_after(self.name, feed.head)
            if entries and entries[0][0] == feed.head + 1:
                acked = await self.store.all_acked(self.name)
                diffs = []
                expected = feed.head + 1
                for seq, encoded in entries:
                    if seq != expected:
                        break
                    _, _, diff_ops = msgpack.unpackb(encoded, raw=False)
                    diffs.append((seq, encoded, diff_ops))
                    expected += 1
                self._apply(diffs, acked)
                return
        record = await self.store.load(self.name)
        if record is None:
            return
        if record.epoch == feed.epoch and record.head <= feed.head:
            return
        if record.epoch != feed.epoch and record.checkpoint_seq == 0:
            await self._start_epoch(record)
            return
        state, history = await self.rebuild(self.name, record)
        log.info(
            "follower takes a snapshot of the room",
            room=self.name,
            epoch=record.epoch,
            head=record.head,
        )
        feed.reset(record.epoch, record.head, state, dict(record.acked), history)
        self.deliver_answers()

    async def _start_epoch(self, record: RoomRecord) -> None:
        """A new epoch from its start: a SNAPSHOT of its seq 0, then its diffs as DIFFs."""
        state, history = await self.rebuild(self.name, dataclasses.replace(record, diffs=[]))
        log.info("follower starts the room's new epoch", room=self.name, epoch=record.epoch)
        self.feed.reset(record.epoch, 0, state, dict(record.acked), history)
        diffs = [
            (seq, encoded, msgpack.unpackb(encoded, raw=False)[2]) for seq, encoded in record.diffs
        ]
        self._apply(diffs, {})

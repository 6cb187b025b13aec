"""A room's feed: what every process that serves a room's members holds of it.

The feed keeps a copy of the state at the published head, the recent history
(the exact encoded DIFFs), each client's last processed aid, and the members.
It publishes batches of diffs to the members (one frame per subscriber per
batch, the same bytes for all), brings joining and resyncing subscribers up to
date (docs/protocol.md §6), skips slow ones ahead with a
SNAPSHOT, and answers the HTTP reads.

It never runs an action. Where the diffs come from is the business of its
source: the room's writer (server/writer.py) on the process that owns the room.

Joins, resyncs and HTTP reads need the state and the head to agree. A source
that changes the state before publishing marks the feed busy for that span
(:meth:`RoomFeed.begin_batch` / :meth:`RoomFeed.end_batch`); readers wait for
:meth:`RoomFeed.settled` and then do their work without awaiting, so nothing
can interleave with a fan-out pass. That is what makes the switch from replay
to live gap-free: the catch-up and the subscription happen in one synchronous
step.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Iterator
from typing import Any, Literal

import msgpack
import structlog

from statecast.protocol import codec
from statecast.protocol.digest import state_digest
from statecast.protocol.messages import Patch, ViewSet, Welcome
from statecast.protocol.views import (
    ALL,
    Spec,
    change_view,
    cut_batch,
    restrict,
    spec_key,
    spec_tag,
    view_of,
)
from statecast.server.config import Config
from statecast.server.fanout import Subscriber, close_or_abort, frame_binary
from statecast.server.history import History
from statecast.server.metrics import Metrics
from statecast.server.view_groups import Dispatch, ViewGroup

log = structlog.get_logger()

REPLAY_CHUNK_BYTES = 256 * 1024


class RoomFailed(Exception):
    """The room cannot serve now; it is unloaded and reloaded from the store."""


class RoomFeed:
    def __init__(
        self,
        name: str,
        state: dict[str, Any],
        *,
        epoch: str,
        head: int,
        acked: dict[str, int],
        history: History,
        config: Config,
        metrics: Metrics,
        type_name: str = "",
        private: tuple[tuple[str, ...], ...] = (),
    ) -> None:
        self.name = name
        #: The room type's private prefixes (docs/protocol.md §5.12).
        self.private = private
        #: Members that see part of the room, by view (server/view_groups.py).
        self.groups: dict[Any, ViewGroup] = {}
        #: Which groups a batch reaches (rebuilt after the groups change).
        self._dispatch: Dispatch | None = None
        #: The room type it was created as (``module:Qualname``), as stored.
        self.type_name = type_name
        #: The state at ``head`` (between begin_batch and end_batch, possibly ahead of it).
        self.state = state
        self.epoch = epoch
        self.head = head
        #: Each client's last processed aid, as of ``head``.
        self.acked = acked
        #: Each client's last answer and the aid it answered (the writer keeps it; §5.8).
        self.answers: dict[str, tuple[int, bytes]] = {}
        self.history = history
        self.config = config
        self.metrics = metrics
        self.members: dict[Subscriber, None] = {}
        #: Members the shared frame goes to by one bare write each: plain, and taking frames.
        self._direct: dict[Subscriber, Callable[[bytes], object]] = {}
        #: Members with an extension negotiated: websockets frames each message for them.
        self._framed: dict[Subscriber, None] = {}
        #: Members to seat on the direct path (or not) at the next pass: joined or stalled.
        self._pending: dict[Subscriber, None] = {}
        self.connections = 0
        self.failed: BaseException | None = None
        self._busy = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._snapshot: tuple[int, bytes] | None = None
        self._state_json: tuple[int, bytes] | None = None
        self._digest: tuple[int, str] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: HTTP reads of views: (epoch, head), the view's state and digest, per view.
        self._views_read: dict[Any, tuple[tuple[str, int], dict[str, Any], str]] = {}

    # --- publishing ----------------------------------------------------------------------

    def begin_batch(self) -> None:
        """The state is about to move ahead of the head: readers wait until end_batch."""
        self._busy = True
        self._idle.clear()

    @property
    def busy(self) -> bool:
        """Between begin_batch and end_batch: the state may be ahead of the head."""
        return self._busy

    def end_batch(self) -> None:
        self._busy = False
        self._idle.set()

    def publish(
        self, diffs: list[tuple[int, bytes]], extras: dict[Subscriber, list[bytes]]
    ) -> None:
        """Append ``diffs`` (seq, encoded DIFF) to the history, move the head, and write them.

        ``extras`` are messages for particular subscribers (an acting agent's ACK/ERROR):
        they ride after the diffs in that subscriber's own frame, so an agent always
        sees its DIFF before its ACK.
        """
        if diffs:
            for diff_seq, encoded in diffs:
                self.history.append(diff_seq, encoded)
            self.head = diffs[-1][0]
            self._snapshot = None
            self.metrics.diffs.inc(len(diffs))
            self._fanout(b"".join(encoded for _, encoded in diffs), extras)
            if self.groups:
                self._fanout_views(diffs, extras)
        for sub, messages in extras.items():
            if sub.lagging:
                # Its DIFFs were skipped: the ACK waits for the SNAPSHOT that holds them.
                sub.held.extend(messages)
            else:
                sub.send(b"".join(messages))

    def _fanout(self, shared: bytes, extras: dict[Subscriber, list[bytes]]) -> None:
        """One write per subscriber; an acting agent's messages ride in the same frame.

        The acting agents go first (they wait for their ACK). Then the loop over the
        direct path is the hot path of a room with many spectators: one bare
        ``transport.write`` of the shared frame per member, with no check, no Python
        call of its own and no metric update (the pass is counted once). The checks
        it does not make are made when something changes instead: a connection
        reports when it stalls (server/fanout.py), and the pass starts by taking
        those members off the direct path. Members with an extension take the
        general path. Pops the subscribers it served from ``extras``.
        """
        if self._pending:
            self._seat_pending()
        members = self.members
        acted = [sub for sub in extras if sub in members and sub.group is None]
        lagging = self._write(shared, acted, self._direct, self._framed, extras)
        for sub in lagging:
            self.skip_ahead(sub)
        n = len(self._direct) + len(self._framed)  # those written to: not the closing ones
        self.metrics.frames_sent.inc(n)
        self.metrics.bytes_sent.inc(len(shared) * n)

    def _write(
        self,
        payload: bytes,
        acted: list[Subscriber],
        direct: dict[Subscriber, Callable[[bytes], object]],
        framed: dict[Subscriber, None],
        extras: dict[Subscriber, list[bytes]],
    ) -> list[Subscriber]:
        """One frame holding ``payload`` to the acting agents (with their own messages),
        the direct path (one bare write each) and the framed members; returns the members
        that are lagging (an acting one's messages stay in ``extras``, held for its
        SNAPSHOT). The acting agents go first: they wait for their ACK."""
        frame = frame_binary(payload)
        high_water = self.config.slow_high_water
        lagging: list[Subscriber] = []
        for sub in acted:
            if sub.backlog() > high_water:
                lagging.append(sub)
            else:
                sub.send(b"".join((payload, *extras.pop(sub))))
        # The acting agents have had this frame: off the direct path for this pass.
        served = {sub: direct.pop(sub) for sub in acted if sub in direct}
        try:
            for write in direct.values():
                write(frame)
        finally:
            direct.update(served)
        for sub in framed:
            if sub in acted:
                continue
            if sub.backlog() > high_water:
                lagging.append(sub)
            else:
                sub.send(payload, frame)
        return lagging

    def _fanout_views(
        self, diffs: list[tuple[int, bytes]], extras: dict[Subscriber, list[bytes]]
    ) -> None:
        """Each view group's VIEW_DIFF for the batch ``diffs``: the batch's ops cut to each
        group's view (protocol/views.py), encoded and framed once per group (the ops once
        per distinct cut: groups that differ only in parts the batch did not touch share
        them); a group whose view it did not touch gets nothing. Pops the members it served
        from ``extras``, as :meth:`_fanout` does."""
        batch = [op for _, encoded in diffs for op in msgpack.unpackb(encoded, raw=False)[2]]
        encoded_ops: dict[tuple[int, ...], bytes] = {}
        acting: dict[ViewGroup, list[Subscriber]] = {}
        for sub in extras:
            if sub.group is not None and sub in self.members:
                acting.setdefault(sub.group, []).append(sub)
        frames = sent = 0
        if self._dispatch is None:
            self._dispatch = Dispatch(list(self.groups.values()))
        for group in self._dispatch.reached([op[1] for op in batch]):
            cut = cut_batch(batch, self.state, group.spec)
            if not cut:
                continue
            key = tuple(map(id, cut))  # the batch's own op objects, or this cut's new ones
            ops_bytes = encoded_ops.get(key)
            if ops_bytes is None:
                ops_bytes = encoded_ops[key] = msgpack.packb(cut, use_bin_type=True)
            payload = codec.encode_view_diff(group.last, self.head, ops_bytes)
            group.last = self.head
            acted = acting.get(group, [])
            lagging = self._write(payload, acted, group.direct, group.framed, extras)
            n = len(group.members) - len(lagging)
            frames += n
            sent += len(payload) * n
            for sub in lagging:
                self.skip_ahead(sub)
        self.metrics.frames_sent.inc(frames)
        self.metrics.bytes_sent.inc(sent)

    # --- members -------------------------------------------------------------------------

    def group_for(self, spec: Spec) -> ViewGroup:
        """The group of subscribers that see ``spec`` (formed at the head if none)."""
        key = spec_key(spec)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = ViewGroup(spec, self.head)
            self._dispatch = None
        return group

    def add(self, sub: Subscriber) -> None:
        """Make ``sub`` a member: it gets every diff published from now on."""
        self.members[sub] = None
        group = None
        if sub.spec is not ALL:
            group = sub.group = self.group_for(sub.spec)
            group.members[sub] = None
        if sub.plain:
            self._pending[sub] = None  # seated on the direct path by the next pass
        elif group is not None:
            group.framed[sub] = None
        else:
            self._framed[sub] = None

    def _remove(self, sub: Subscriber) -> None:
        self.members.pop(sub, None)
        group, sub.group = sub.group, None
        if group is not None:
            group.members.pop(sub, None)
            group.direct.pop(sub, None)
            group.framed.pop(sub, None)
            if not group.members and self.groups.get(group.key) is group:
                del self.groups[group.key]
                self._dispatch = None
        self._direct.pop(sub, None)
        self._framed.pop(sub, None)
        self._pending.pop(sub, None)
        sub.conn.on_stall = None

    def _stall(self, sub: Subscriber) -> None:
        """``sub``'s connection stopped taking frames (called inside a write, maybe mid-pass)."""
        self._pending[sub] = None

    def _seat_pending(self) -> None:
        """Decide, for each member that joined or stalled since the last pass, whether
        the next frames go to it: yes, if its connection takes them; a lagging one is
        skipped ahead; a closing one gets nothing more (its session leaves the room)."""
        pending, self._pending = self._pending, {}
        for sub in pending:
            direct = self._direct if sub.group is None else sub.group.direct
            direct.pop(sub, None)
            if sub not in self.members or sub.closing:
                continue
            if sub.paused:
                self.skip_ahead(sub)
            else:
                direct[sub] = sub.write
                sub.conn.on_stall = functools.partial(self._stall, sub)

    def reset(
        self,
        epoch: str,
        head: int,
        state: dict[str, Any],
        acked: dict[str, int],
        history: History,
    ) -> None:
        """Take another line of history (a new epoch, or one this copy cannot reach by diffs).

        Every member gets a SNAPSHOT of it at once (docs/protocol.md §6.5 allows one at any time).
        """
        self.epoch, self.head, self.state, self.acked = epoch, head, state, acked
        self.history = history
        self._snapshot = self._state_json = self._digest = None
        snapshot = self.snapshot_bytes()
        frame = frame_binary(snapshot)  # framed once for every member, as a DIFF is
        for sub in self.members:
            if sub.group is None:
                sub.send(snapshot, frame)
        for sub in self.members:
            sub.view_set_at = 0  # of the old epoch
        for group in self.groups.values():  # each view's own SNAPSHOT, once per view
            group.last = head
            group.snapshot = None
            view = group.snapshot_bytes(epoch, head, state)
            view_frame = frame_binary(view)
            for sub in group.members:
                sub.send(view, view_frame)

    # --- slow subscribers ----------------------------------------------------------------

    def skip_ahead(self, sub: Subscriber) -> None:
        sub.lagging = True
        self._remove(sub)
        self.metrics.slow_skips.inc()
        log.info("subscriber lagging", room=self.name, conn=sub.id, backlog=sub.backlog())
        self.spawn(self._recover(sub))

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
            # fail() closed the members; a lagging subscriber is not one of them.
            await close_or_abort(sub.conn, 1011, "room failed", self.config.slow_timeout)
            return
        held, sub.held = sub.held, []
        if not sub.open or not sub.lagging:
            return
        lead = b""
        if sub.view_unsent:  # its VIEW's answer, then the new view's SNAPSHOT at once
            sub.view_unsent = False
            assert sub.view is not None
            lead = codec.encode(ViewSet(self.head, sub.view, [], spec_tag(sub.spec)))
        sub.send(b"".join((lead, self.snapshot_for(sub), *held)))
        sub.lagging = False
        self.add(sub)

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
            self._snapshot = (self.head, codec.encode_snapshot(self.epoch, self.head, self.state))
        return self._snapshot[1]

    def snapshot_for(self, sub: Subscriber) -> bytes:
        """The SNAPSHOT ``sub`` gets: the room's, or its view's (call when settled)."""
        if sub.spec is ALL:
            return self.snapshot_bytes()
        return self.group_for(sub.spec).snapshot_bytes(self.epoch, self.head, self.state)

    def plan_sync(
        self, sub: Subscriber, resume: tuple[str, int] | None
    ) -> tuple[str, bytes | None]:
        """docs/protocol.md §6.2: current at the head; else the smallest of a replay (if the
        diffs are held), the net change (a PATCH, for a client that asked for them, from a
        seq within the index's horizon, §5.11) and a SNAPSHOT. A view (§5.12) has no
        replay: its net change, cut to it, is its replay, and its SNAPSHOT is of the view.
        Returns the kind and, for a PATCH, its bytes."""
        if resume is None:
            return "snapshot", None
        epoch, seq = resume
        if epoch != self.epoch or seq > self.head:
            return "snapshot", None
        if seq == self.head:
            return "current", None
        spec = sub.spec
        best, size = "snapshot", len(self.snapshot_for(sub))
        if spec is ALL and self.history.holds_after(seq):
            replay = self.history.size_after(seq)
            if replay < size:
                best, size = "replay", replay
        if (sub.patch or spec is not ALL) and seq >= self.history.index.horizon:
            net = self.history.index.net_change(self.state, seq)
            if net is not None:
                cut = net if spec is ALL else restrict(net, self.state, spec)
                encoded = codec.encode(Patch(self.epoch, seq, self.head, cut))
                if len(encoded) < size:
                    return "patch", encoded
        return best, None

    def _catch_up(
        self,
        sub: Subscriber,
        sync: str,
        since: int,
        lead: bytes = b"",
        patch: bytes | None = None,
    ) -> Iterator[bytes]:
        """Payloads that bring a subscriber from ``since`` to the head (``lead`` first)."""
        if sync == "snapshot":
            yield lead + self.snapshot_for(sub)
            return
        if patch is not None:
            yield lead + patch
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
        sync, patch = self.plan_sync(sub, resume)
        acked = 0
        if sub.role == "agent" and sub.client is not None:  # "" is a client id too
            acked = self.acked.get(sub.client, 0)
        limit = self.config.max_message_bytes
        welcome = Welcome(
            self.epoch,
            self.head,
            sub.role,
            sub.client,
            acked,
            sync,  # type: ignore[arg-type]
            limit,
            sub.view,
            None if sub.view is None else spec_tag(sub.spec),
        )
        since = resume[1] if resume is not None else 0
        for payload in self._catch_up(sub, sync, since, codec.encode(welcome), patch):
            sub.send(payload)
        self.add(sub)
        self.metrics.resumes.labels(sync).inc()
        return welcome

    async def resync(self, sub: Subscriber, epoch: str, seq: int) -> str:
        await self.settled()
        if sub.lagging or sub not in self.members:
            return "snapshot"  # a SNAPSHOT is on its way already
        if epoch == self.epoch and seq < sub.view_set_at:
            sync, patch = "snapshot", None  # its copy took a VIEW_SET's ops while it waited
        else:
            sync, patch = self.plan_sync(sub, (epoch, seq))
        for payload in self._catch_up(sub, sync, seq, patch=patch):
            sub.send(payload)
        self.metrics.resumes.labels(sync).inc()
        return sync

    async def change_view(
        self, sub: Subscriber, spec: Spec, prefixes: list[list[str]] | Literal[True]
    ) -> None:
        """``sub`` sees ``spec`` from now on: one VIEW_SET at the head takes its copy from
        the old view to the new one (what stops showing removed, what starts with its
        value now), and its frames come from the new view's group (docs/protocol.md §5.12)."""
        await self.settled()
        old = sub.spec
        ops = change_view(self.state, old, spec)
        member = sub in self.members
        if member:
            self._remove(sub)
        sub.spec, sub.view = spec, prefixes
        if sub.lagging:
            sub.view_unsent = True
            return  # its SNAPSHOT, of the new view, is on its way: the VIEW_SET goes first
        sub.view_set_at = self.head
        sub.send(codec.encode(ViewSet(self.head, prefixes, ops, spec_tag(spec))))
        if member:
            self.add(sub)

    def leave(self, sub: Subscriber) -> None:
        self._remove(sub)
        sub.lagging = False

    # --- reads for HTTP ------------------------------------------------------------------

    @property
    def etag(self) -> str:
        return f'"{self.epoch}:{self.head}"'

    def view_state(self, spec: Spec) -> tuple[str, dict[str, Any], str]:
        """(ETag, the view's state, its digest) at the head (call when settled); cached
        per view until the next diff, as the whole state's body is."""
        key = spec_key(spec)
        cached = self._views_read.get(key)
        if cached is None or cached[0] != (self.epoch, self.head):
            state = view_of(self.state, spec)
            if len(self._views_read) >= 256:
                self._views_read.clear()
            cached = self._views_read[key] = ((self.epoch, self.head), state, state_digest(state))
        return f'"{self.epoch}:{self.head}:{spec_tag(spec)}"', cached[1], cached[2]

    async def state_json(self) -> tuple[str, bytes]:
        """(ETag, JSON body of /state) at one instant; the body is cached per head."""
        await self.settled()
        if self._state_json is None or self._state_json[0] != self.head:
            body = {"epoch": self.epoch, "seq": self.head, "state": self.state}
            self._state_json = (self.head, json.dumps(body, separators=(",", ":")).encode())
        return self.etag, self._state_json[1]

    def digest(self) -> str:
        """SHA-256 of the JCS form of the state at the head (call when settled)."""
        if self._digest is None or self._digest[0] != self.head:
            self._digest = (self.head, state_digest(self.state))
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

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run ``coro`` as a task the feed cancels when it closes."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def fail(self, exc: BaseException) -> None:
        """The room cannot go on: refuse reads and close every member with 1011."""
        self.failed = exc
        for sub in list(self.members):
            self._remove(sub)
            self.spawn(close_or_abort(sub.conn, 1011, "room failed", self.config.slow_timeout))

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()

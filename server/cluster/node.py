"""This process as a node of a cluster: which rooms it owns, which it follows, and the moves
between the two.

* A room is loaded by taking its lease if it is free: this node then owns it
  (a feed and a writer, and it listens on the room's inbox for forwarded
  actions). Otherwise it follows the room (a feed and a follower).
* A follower that has members, or receives an action, takes the lease as soon
  as it is free: when it is released (the owner stopped), or when it expires
  (the owner died or paused), found by a check every third of the TTL. It then
  catches up from Redis and goes on in the same epoch at the next seq.
* An owner whose write is refused, or whose lease renewal finds the lease lost,
  stops writing at once and follows; the actions it had not answered are
  forwarded to the new owner.
* An owner whose room Redis lost writes the state back under a new epoch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack
import structlog

from statecast.protocol.errors import Rejection
from statecast.server.cluster.follower import Follower
from statecast.server.cluster.forwarding import (
    Forwarder,
    decode_unit,
    encode_answers,
    retry_outcomes,
    unknown_outcome,
)
from statecast.server.cluster.lease import Leases
from statecast.server.epoch import starting
from statecast.server.fanout import Subscriber
from statecast.server.feed import RoomFeed
from statecast.server.live import LiveRoom
from statecast.server.registry import RoomTypeMissing, type_name
from statecast.server.store.base import RoomLost, StoreUnavailable
from statecast.server.store.redis import (
    Bus,
    RedisStore,
    agents_channel,
    feed_channel,
    inbox_channel,
    node_channel,
)
from statecast.server.writer import (
    HookRequest,
    Outcome,
    RemoteReply,
    Request,
    RoomWriter,
)

if TYPE_CHECKING:
    from statecast.server.manager import RoomManager

log = structlog.get_logger()

#: Notices on a room's feed channel, besides batches: [notice, node].
RELEASED = "released"
TAKEN = "taken"
#: Messages on a room's agents channel: [ARRIVE|DEPART, node, client, HELLO number] and
#: [ROSTER, node, {client: HELLO number}] (every agent connected on that node, sent every
#: third of the TTL and when the room changes owner).
ARRIVE = "arrive"
DEPART = "depart"
ROSTER = "roster"
#: A node unheard for this many TTLs (no roster: it died) has its agents depart.
PRESENCE_EXPIRY = 2
HAND_OVER_TIMEOUT = 5.0
#: After Redis starts, how long past a third of the TTL a node waits before it creates a
#: room Redis does not have (the owners' buses re-subscribe and renewals write back).
#: Redis reports its uptime in whole seconds, so the wait rounds up.
RESTORE_MARGIN = 2.0


class ClusterNode:
    def __init__(self, manager: RoomManager, store: RedisStore) -> None:
        self.manager = manager
        self.store = store
        self.config = manager.config
        self.ttl = self.config.lease_ttl
        self.leases = Leases(store, self.ttl, self._lease_lost, self._room_gone)
        self.forwarder = Forwarder(store, self.ttl, self.take_over, self.config.slow_timeout)
        self.bus: Bus = store.bus(self._on_message, self._on_reconnect)
        self._channels: dict[str, tuple[str, str]] = {}  # channel -> (kind, room)
        self._check: asyncio.Task[None] | None = None
        self._taking: dict[str, asyncio.Task[bool]] = {}
        #: When this node first and last found a room it wanted to take over missing from
        #: Redis, in one stretch.
        self._missing: dict[str, tuple[float, float]] = {}
        #: (room, client) -> the newest HELLO number seen for it, and this node's own
        #: connection's number: one live connection per agent id across the cluster.
        self._hellos: dict[tuple[str, str], int] = {}
        self._own_hellos: dict[Subscriber, int] = {}
        self._who_writing: set[str] = set()
        self._who_again: set[str] = set()
        #: Closes a connection with 4009 (set by the app: the WebSocket listener does it).
        self.on_4009: Callable[[Subscriber], None] = lambda sub: None

    @property
    def node_id(self) -> str:
        return self.store.node_id

    async def start(self) -> None:
        log.info("cluster node started", node=self.node_id)
        self.bus.start()
        self.leases.start()
        self._check = asyncio.create_task(self._check_forever(), name="cluster check")

    async def close(self) -> None:
        if self._check is not None:
            self._check.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._check
        await self.leases.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await self.bus.close()

    # --- loading -------------------------------------------------------------------------

    async def load(self, name: str, create: bool) -> LiveRoom | None:
        """Own the room if its lease is free, else follow it."""
        if await self.leases.acquire(name):
            try:
                return await self._load_owned(name, create)
            except BaseException:
                await self._give_up(name)
                raise
        return await self._load_followed(name, create)

    async def _load_owned(self, name: str, create: bool) -> LiveRoom | None:
        manager = self.manager
        record = await self.store.load(name)
        if record is not None:  # as owner: a lost write behind it starts a new epoch here too
            record = await manager.continued(name, record)
        if record is None:
            if not create:
                await self._give_up(name)
                return None
            wait = await self._restore_wait(name)
            if wait is not None:
                await self._give_up(name)  # quietly: the owner may need the lease to write back
                if wait == 0:
                    raise StoreUnavailable(f"room {name} is held by a node: not created afresh")
                await asyncio.sleep(wait)
                return await self.load(name, create)
            fresh = manager.new_record(name)
            if not await self.store.create_if_absent(name, fresh):
                record = await self.store.load(name)  # created meanwhile by a lease-less writer
            else:
                log.info("room created", room=name, epoch=fresh.epoch, type=fresh.type_name)
                record = fresh
            if record is None:
                raise RoomLost(f"room {name} vanished while it was created")
        else:
            manager.make_space()
        room, history = await manager.rebuild(name, record)
        feed = manager.make_feed(name, room.state, record, history)
        live = LiveRoom(feed, manager.make_writer(feed, room, hooks=self), forward=self.forward)
        await self._listen(inbox_channel(name), "in", name)
        await self._listen(agents_channel(name), "agents", name)
        self._share_who(live)
        return manager.hold(live)

    async def _load_followed(self, name: str, create: bool) -> LiveRoom | None:
        manager = self.manager
        await self._listen(feed_channel(name), "feed", name)
        record = await self.store.load(name)
        deadline = asyncio.get_running_loop().time() + self.ttl
        while record is None and create and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)  # the owner is creating it
            record = await self.store.load(name)
        if record is None:
            await self._unlisten(feed_channel(name))
            if create:
                raise Rejection("unavailable", f"room {name} is being created elsewhere")
            return None
        manager.make_space()
        room, history = await manager.rebuild(name, record)
        feed = manager.make_feed(name, room.state, record, history)
        follower = Follower(feed, self.store, self._rebuild)
        live = LiveRoom(
            feed, None, follower=follower, forward=self.forward, grace=self.config.leave_grace
        )
        await self._listen(agents_channel(name), "agents", name)
        self._share_who(live)
        manager.hold(live)
        follower.repair_soon()  # batches published while the record was read
        log.info("following room", room=name, epoch=record.epoch, head=record.head)
        return live

    async def _rebuild(self, name: str, record: Any) -> tuple[dict[str, Any], Any]:
        room, history = await self.manager.rebuild(name, record)
        return room.state, history

    async def _give_up(self, name: str) -> None:
        with contextlib.suppress(StoreUnavailable):
            await self.leases.release(name, _released(self.node_id))

    # --- the bus -------------------------------------------------------------------------

    async def _listen(self, channel: str, kind: str, room: str) -> None:
        self._channels[channel] = (kind, room)
        await self.bus.subscribe(channel)

    async def _unlisten(self, channel: str) -> None:
        self._channels.pop(channel, None)
        await self.bus.unsubscribe(channel)

    def _on_message(self, channel: str, data: bytes) -> None:
        if channel == node_channel(self.node_id):
            self.forwarder.on_answers(data)
            return
        kind, room = self._channels.get(channel, ("", ""))
        live = self.manager.rooms.get(room)
        if kind == "feed":
            if live is None or live.follower is None:
                return
            payload = msgpack.unpackb(data, raw=False, strict_map_key=False)
            if payload[0] == RELEASED:
                if payload[1] != self.node_id:
                    live.feed.spawn(self.take_over(live))
                return
            if payload[0] == TAKEN:
                self.forwarder.reforward(live)
                live.feed.spawn(self._publish_roster(live))  # the new owner's presence
                return
            live.follower.on_batch(payload)
        elif kind == "agents":
            if live is not None:
                self._on_agents(live, msgpack.unpackb(data, raw=False, strict_map_key=False))
        elif kind == "in":
            # A unit of one client's actions, in its lane's order: into the writer as is.
            requests = decode_unit(data, time.perf_counter())
            if live is not None and live.owned:
                assert live.writer is not None
                for req in requests:
                    live.writer.submit(req)
            else:
                self._publish_answers("", retry_outcomes(requests))

    def _on_reconnect(self) -> None:
        """Messages may have been lost while the bus was down: repair every follower and send
        forwarded units that wait for answers again. The other nodes' agents count as heard
        now: their rosters follow within a check."""
        now = time.monotonic()
        for live in list(self.manager.rooms.values()):
            live.presence.heard_all(now)
            if live.follower is not None:
                live.follower.repair_soon()
            # Answers to this node's forwarded units may have been lost with the bus: send
            # what still waits again now (a copy already run is answered ACK nil, in order).
            self.forwarder.reforward(live)

    # --- one connection per agent id ------------------------------------------------------

    async def number_hello(self, live: LiveRoom) -> int | None:
        """The next HELLO number of the room, cluster-wide (None while Redis is down): the
        higher number is the newer connection of a client id."""
        name = live.name
        known = [n for (room, _), n in self._hellos.items() if room == name]
        floor = max([*known, *self._own_hellos.values()], default=0)
        try:
            return await self.store.next_hello(name, floor)
        except StoreUnavailable:
            return None  # one connection per node still holds; the next roster tells the owner

    def agent_arrived(self, live: LiveRoom, sub: Subscriber, number: int | None) -> None:
        """An agent connected here with HELLO ``number``: tell the other nodes (the owner's
        presence counts it; an older connection of the same client id is closed with 4009)."""
        client = sub.client
        if number is None or client is None:
            return
        self._own_hellos[sub] = number
        key = (live.name, client)
        if self._hellos.get(key, 0) > number:  # a newer HELLO elsewhere came first
            self._take_over_client(live, sub)
            return
        self._hellos[key] = number
        live.feed.spawn(self._publish_agents(live, [ARRIVE, self.node_id, client, number]))

    def agent_left(self, live: LiveRoom, sub: Subscriber, current: bool) -> None:
        """An agent's connection here ended; ``current``: it was still the agent's live
        connection (not taken over), so the other nodes hear of its departure."""
        number = self._own_hellos.pop(sub, None)
        if current and number is not None and sub.client is not None:
            live.feed.spawn(self._publish_agents(live, [DEPART, self.node_id, sub.client, number]))

    async def _publish_agents(self, live: LiveRoom, message: list[Any]) -> None:
        with contextlib.suppress(StoreUnavailable):
            data = bytes(msgpack.packb(message, use_bin_type=True))
            await self.store.publish(agents_channel(live.name), data)

    async def _publish_roster(self, live: LiveRoom) -> None:
        numbers = self._own_hellos
        agents = {c: numbers[sub] for c, sub in live.presence.connected.items() if sub in numbers}
        if agents:
            await self._publish_agents(live, [ROSTER, self.node_id, agents])

    # --- who is in the room, for the listing ---------------------------------------------

    def _share_who(self, live: LiveRoom) -> None:
        live.presence.changed = lambda: self._who_soon(live)

    def _who_soon(self, live: LiveRoom) -> None:
        """Rewrite this node's field of the room's ``who`` hash (one write in flight)."""
        name = live.name
        if name in self._who_writing:
            self._who_again.add(name)
            return
        self._who_writing.add(name)
        live.feed.spawn(self._write_who(live))

    async def _write_who(self, live: LiveRoom) -> None:
        try:
            while True:
                self._who_again.discard(live.name)
                with contextlib.suppress(StoreUnavailable):
                    await self._put_who(live)
                if live.name not in self._who_again:
                    return
        finally:
            self._who_writing.discard(live.name)

    async def _put_who(self, live: LiveRoom) -> None:
        presence = live.presence
        await self.store.put_who(
            live.name, presence.local, presence.spectators, PRESENCE_EXPIRY * self.ttl
        )

    def _on_agents(self, live: LiveRoom, payload: list[Any]) -> None:
        """Another node's news of its agents: presence everywhere, and 4009 here."""
        kind, node = payload[0], payload[1]
        if node == self.node_id:
            return
        presence = live.presence
        now = time.monotonic()
        if kind == ARRIVE:
            client, number = payload[2], int(payload[3])
            presence.arrive_elsewhere(client, node, number, now)
            self._agent_elsewhere(live, client, number)
        elif kind == DEPART:
            presence.depart_elsewhere(payload[2], node, int(payload[3]))
        elif kind == ROSTER:
            agents = {client: int(number) for client, number in payload[2].items()}
            presence.roster(node, agents, now)
            for client, number in agents.items():
                self._agent_elsewhere(live, client, number)

    def _agent_elsewhere(self, live: LiveRoom, client: str, number: int) -> None:
        key = (live.name, client)
        self._hellos[key] = max(self._hellos.get(key, 0), number)
        sub = live.presence.connected.get(client)
        if sub is not None and self._own_hellos.get(sub, number) < number:
            self._take_over_client(live, sub)

    def _take_over_client(self, live: LiveRoom, sub: Subscriber) -> None:
        log.warning("client id taken over on another node", room=live.name, client=sub.client)
        live.feed.leave(sub)
        self._own_hellos.pop(sub, None)
        self.on_4009(sub)

    # --- owning and following ------------------------------------------------------------

    def forward(self, live: LiveRoom, req: Request) -> None:
        self.forwarder.forward(live, req)

    async def take_over(self, live: LiveRoom) -> bool:
        """Take the lease of a followed room if it is free, and become its owner."""
        if live.owned:
            return True
        task = self._taking.get(live.name)
        if task is None:
            task = asyncio.create_task(self._take_over(live))
            self._taking[live.name] = task
            task.add_done_callback(lambda _: self._taking.pop(live.name, None))
        return await asyncio.shield(task)

    async def _take_over(self, live: LiveRoom) -> bool:
        name = live.name
        if self.manager.rooms.get(name) is not live or live.failed is not None:
            return False
        try:
            # A room Redis lost is written back by its owner; a follower does not even take
            # the lease until the room has been missing for a while (_may_write_back).
            if await self.store.head(name) is None and not self._may_write_back(name):
                return False
            if not await self.leases.acquire(name):
                return False
            record = await self.store.load(name)
        except StoreUnavailable:
            return False
        feed = live.feed
        if record is None and not self._may_write_back(name):
            with contextlib.suppress(StoreUnavailable):
                await self.leases.release(name, b"")  # quietly: the owner writes it back
            self.leases.drop(name)
            return False
        self._missing.pop(name, None)
        if record is None:
            await self._write_back(feed)  # Redis lost the room: this node's copy goes back
        elif record.epoch != feed.epoch or record.head != feed.head:
            assert live.follower is not None
            with contextlib.suppress(StoreUnavailable):
                await live.follower.catch_up()
            if feed.epoch != record.epoch or feed.head != record.head:
                rebuilt, history = await self.manager.rebuild(name, record)
                feed.reset(record.epoch, record.head, rebuilt.state, dict(record.acked), history)
        if record is not None:
            # A follower never kept answers (only the owner's writer records them): the
            # store's are the room's, for each client's last aid (docs/protocol.md §5.8).
            feed.answers = dict(record.answers)
        try:
            room_class = self.manager.room_types.for_stored(name, feed.type_name)
        except RoomTypeMissing:
            await self._give_up(name)
            self.leases.drop(name)
            return False
        room = room_class(name, feed.state)
        live.writer = self.manager.make_writer(feed, room, hooks=self)
        # The forwarded actions still waiting go first, before anything newer can.
        self.forwarder.resubmit(live)
        live.presence.run_hooks(room.has_presence_hooks(), room.present_agents())
        if live.follower is not None:
            live.follower.closed = True
            live.follower.release_answers()
            live.follower = None
        await self._unlisten(feed_channel(name))
        await self._listen(inbox_channel(name), "in", name)
        with contextlib.suppress(StoreUnavailable):  # followers re-send what waits for an answer
            await self.store.publish(feed_channel(name), _notice(TAKEN, self.node_id))
        log.info("room taken over", room=name, epoch=feed.epoch, head=feed.head)
        return True

    def _become_follower(self, live: LiveRoom) -> None:
        name = live.name
        self.leases.drop(name)
        live.presence.stop_hooks()
        live.follower = Follower(live.feed, self.store, self._rebuild)
        live.feed.spawn(self._follow(live))

    async def _follow(self, live: LiveRoom) -> None:
        name = live.name
        with contextlib.suppress(StoreUnavailable):
            await self._unlisten(inbox_channel(name))
            await self._listen(feed_channel(name), "feed", name)
        if live.follower is not None:
            await live.follower.repair()

    def _room_gone(self, room: str) -> None:
        """Redis lost an owned room's keys and its lease: this node's copy is the freshest,
        so it writes the room back (the writer takes the lease again first)."""
        live = self.manager.rooms.get(room)
        if live is not None and live.owned:
            assert live.writer is not None
            live.writer.write_back_soon()

    async def _restore_wait(self, name: str) -> float | None:
        """Before creating a room Redis does not have: None to go ahead; 0 when another node
        holds it in memory (Redis lost it, its owner writes it back: never create it afresh);
        else how long to wait for Redis, started moments ago, to be given back the rooms it
        lost (an owner writes its room back at its next renewal, a third of a TTL)."""
        if await self.store.held_elsewhere(name):
            return 0.0
        window = self.ttl / 3 + RESTORE_MARGIN
        uptime = await self.store.uptime()
        return window - uptime if uptime < window else None

    def _may_write_back(self, name: str) -> bool:
        """Whether this follower may write back a room Redis lost: only once it has been
        missing for two TTLs (its owner died too), since a follower's copy may be behind
        the owner's; the owner writes it back within a third of a TTL (_room_gone)."""
        now = time.monotonic()
        first, last = self._missing.get(name, (now, now))
        if now - last > self.ttl:  # not seen missing lately: it came back in between
            first = now
        self._missing[name] = (first, now)
        return now - first >= 2 * self.ttl

    def _lease_lost(self, room: str) -> None:
        live = self.manager.rooms.get(room)
        if live is not None and live.owned:
            assert live.writer is not None
            unanswered = live.writer.stop()
            self._become_follower(live)
            self._hand_on(live, unanswered)

    def _hand_on(self, live: LiveRoom, requests: list[Request | HookRequest]) -> None:
        """Actions this node took as owner and did not answer: on to the new owner.

        Presence hooks are not handed on: the new owner runs the hooks of its own members.
        """
        retry: list[Request] = []
        for req in requests:
            if not isinstance(req, Request):
                continue
            if live.owned:  # this node took the room back meanwhile
                assert live.writer is not None
                live.writer.submit(req)
            elif isinstance(req.reply, RemoteReply):
                retry.append(req)  # the sending node's lane sends them again, in order
            else:
                self.forward(live, req)
        if retry:
            self._publish_answers("", retry_outcomes(retry))

    # --- writer hooks --------------------------------------------------------------------

    def answer_remote(self, writer: RoomWriter, outcomes: list[Outcome]) -> None:
        self._publish_answers(writer.feed.epoch, outcomes)

    def _publish_answers(self, epoch: str, outcomes: list[Outcome]) -> None:
        async def publish(channel: str, data: bytes) -> None:
            with contextlib.suppress(StoreUnavailable):
                await self.store.publish(channel, data)

        for channel, data in encode_answers(epoch, outcomes).items():
            task = asyncio.ensure_future(publish(channel, data))
            task.add_done_callback(lambda _: None)

    def refused(self, writer: RoomWriter, requests: list[Request | HookRequest]) -> None:
        live = self.manager.rooms.get(writer.name)
        if live is None:
            # The room is no longer held here. Forwarded actions go back to their lanes, to
            # be sent on to the room's owner; this node's own may have been written (a batch
            # whose write was in doubt), so their outcome is unknown: the agent resumes.
            local = [r for r in requests if isinstance(r, Request)]
            self._publish_answers(
                "", retry_outcomes([r for r in local if isinstance(r.reply, RemoteReply)])
            )
            unknown_outcome([r for r in local if not isinstance(r.reply, RemoteReply)])
            return
        if live.writer is writer and live.follower is None:
            self._become_follower(live)
        self._hand_on(live, requests)

    async def keys_lost(self, writer: RoomWriter) -> None:
        if not await self.leases.acquire(writer.name):
            raise RoomLost(f"room {writer.name}: lost, and another node holds its lease")
        await self._write_back(writer.feed)

    async def _write_back(self, feed: RoomFeed) -> None:
        """Redis lost the room: this node's state becomes seq 0 of a new epoch (the old
        epoch's history is gone), written back with the acked aids; SNAPSHOT to all."""
        name = feed.name
        kind = feed.type_name or type_name(self.manager.room_types.for_room(name))
        record = starting(kind, msgpack.packb(feed.state, use_bin_type=True), feed.acked)
        record.answers = dict(feed.answers)  # a follower's copy has none: it never ran actions
        await self.store.create(name, record)
        old_epoch, old_head = feed.epoch, feed.head
        history = feed.history
        history.reset(0)
        feed.reset(record.epoch, 0, feed.state, feed.acked, history)
        log.warning(
            "room written back on a new epoch",
            room=name,
            epoch=record.epoch,
            old_epoch=old_epoch,
            old_head=old_head,
        )

    # --- the periodic check --------------------------------------------------------------

    async def _check_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            if not await self.store.ping():
                continue
            before = time.monotonic() - PRESENCE_EXPIRY * self.ttl
            for live in list(self.manager.rooms.values()):
                live.presence.expire(before)
                with contextlib.suppress(Exception):
                    await self._publish_roster(live)
                    if live.presence.local or live.presence.spectators:
                        await self._put_who(live)
                if live.follower is None:
                    continue
                with contextlib.suppress(Exception):
                    wanted = bool(live.feed.members or live.feed.connections)
                    if wanted and await self.take_over(live):
                        continue
                    await live.follower.repair()

    # --- leaving -------------------------------------------------------------------------

    async def unloaded(self, live: LiveRoom) -> None:
        """An idle room left memory (its writer checkpointed it): give up its lease and
        channels, so whichever node needs it next owns it."""
        name = live.name
        self.forwarder.fail_all(live)
        with contextlib.suppress(StoreUnavailable):
            if live.writer is not None and name in self.leases.owned:
                await self.leases.release(name, _released(self.node_id))
            await self._unlisten(inbox_channel(name))
            await self._unlisten(feed_channel(name))
            await self._unlisten(agents_channel(name))
            await self.store.put_who(name, [], 0, 0)
        self.leases.drop(name)
        for key in [k for k in self._hellos if k[0] == name]:
            del self._hellos[key]

    async def hand_over(self) -> None:
        """Graceful stop: checkpoint and release every owned room so followers take over now."""
        for live in list(self.manager.rooms.values()):
            if not live.owned:
                continue
            assert live.writer is not None
            try:
                async with asyncio.timeout(HAND_OVER_TIMEOUT):
                    await live.writer.close()
                    self._hand_on(live, live.writer.stop())
                    await self.leases.release(live.name, _released(self.node_id))
            except Exception:
                log.exception("hand-over failed: the lease will expire", room=live.name)


def _notice(kind: str, node: str) -> bytes:
    return bytes(msgpack.packb([kind, node], use_bin_type=True))


def _released(node: str) -> bytes:
    return _notice(RELEASED, node)

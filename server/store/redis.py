"""The Redis store: every key, channel and script statecast uses in Redis lives here.

Per room ``R`` (all keys share the hash tag ``{R}``, so one script may touch
them together, Redis Cluster included):

* ``sc:{R}:meta``   hash: ``epoch``, ``type``, ``head``, ``cp`` (checkpoint seq),
  ``batch`` (id of the last batch written, so a retried append is recognised)
* ``sc:{R}:state``  the checkpoint: the state at ``cp``, msgpack
* ``sc:{R}:log``    stream of DIFFs; entry ID ``<seq>-0``, field ``d`` = the encoded DIFF
* ``sc:{R}:acked``  hash: client id -> last processed aid
* ``sc:{R}:answers``  hash: client id -> msgpack ``[aid, answer]``, its last handler
  answer (docs/protocol.md §5.8) and the aid it answered
* ``sc:{R}:lease``  ``"<node> <token>"``, expiring after the lease TTL
* ``sc:{R}:fence``  the fencing counter, INCR at each acquisition

``sc:{R}:hellos`` counts agent HELLOs, so the newest connection of a client id wins
across nodes. ``sc:{R}:who`` is a hash: node id -> msgpack ``[agents, spectators,
until]``, the agents present through that node (connected there, or within their leave
grace on the owner), its spectator count, and until when that holds (Unix ms); each
node rewrites its field on every change and every third of the lease TTL, and the key
expires when no node refreshes it. The listing reads it for the cluster-wide counts.

Channels: ``sc:{R}:feed`` carries each written batch (published by the append
script itself, so the order on the channel is the order in the log) and lease
releases; ``sc:{R}:in`` carries actions forwarded to the room's owner;
``sc:{R}:agents`` announces each agent connection and departure, and each
node's roster of its agents (server/cluster/node.py);
``sc:node:<id>`` carries an owner's answers back to the node that forwarded.
``sc:rooms`` is a sorted set of every room name (score 0, read by name order).

Every write that changes a room goes through one script (server/store/redis_lua/,
each file names its KEYS and ARGV) that checks the writer's fencing token and,
for an append, the head it expects: a stale owner's write is refused inside
Redis, never by a check in Python before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import msgpack
import structlog
from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from statecast.server.store.base import (
    Fenced,
    RoomLost,
    RoomRecord,
    RoomSummary,
    StoredChange,
    StoreUnavailable,
    StoreUsage,
)

log = structlog.get_logger()

ROOMS_INDEX = "sc:rooms"
ATTEMPTS = 3
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)


def _key(room: str, part: str) -> str:
    return f"sc:{{{room}}}:{part}"


def feed_channel(room: str) -> str:
    return _key(room, "feed")


def inbox_channel(room: str) -> str:
    return _key(room, "in")


def agents_channel(room: str) -> str:
    return _key(room, "agents")


def node_channel(node: str) -> str:
    return f"sc:node:{node}"


def _script(name: str) -> str:
    return resources.files("statecast.server.store").joinpath(f"redis_lua/{name}.lua").read_text()


@dataclass(slots=True)
class _Held:
    """What this process knows of a room it writes: its epoch, head and lease token."""

    epoch: str
    head: int
    token: int | None = None
    #: (what, batch id) of an append whose outcome is unknown: its retry reuses the id.
    unsure: tuple[Any, str] | None = None


class RedisStore:
    """A :class:`~statecast.server.store.base.Store` on Redis, plus leases and a message bus."""

    durable = True

    def __init__(
        self,
        url: str,
        *,
        node_id: str | None = None,
        retain_diffs: int = 10_000,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
        timeout: float = 2.0,
    ) -> None:
        """``retain_diffs``: log entries kept at or below a checkpoint (replay after failover).

        ``wait_replicas``: after each write, WAIT until that many replicas have it.
        ``timeout``: seconds a command may take before the store counts as unreachable.
        """
        self.url = url
        self.node_id = node_id or secrets.token_hex(6)
        self.retain_diffs = retain_diffs
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.timeout = timeout
        self._redis: aioredis.Redis | None = None
        self._held: dict[str, _Held] = {}
        self._batches = itertools.count(1)
        self._scripts: dict[str, Any] = {}
        #: Rooms the last renew() found gone from Redis (lease and keys both lost).
        self.gone: set[str] = set()

    # --- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        client = aioredis.from_url(
            self.url,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            # Retried here (_attempts), where a call that never connected is told apart
            # from one that may have run: only the first kind is certainly not written.
            retry=Retry(NoBackoff(), 0),
            client_name=f"statecast-{self.node_id}",
        )
        for name in ("append", "create", "checkpoint", "acquire", "renew", "release", "hello"):
            self._scripts[name] = client.register_script(_script(name))
        self._redis = client
        try:
            await client.ping()
        except _UNREACHABLE as exc:
            log.warning("redis unreachable at start", url=_safe(self.url), error=str(exc))

    async def close(self) -> None:
        client, self._redis = self._redis, None
        if client is not None:
            await client.aclose()

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("the store is not open")
        return self._redis

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except _UNREACHABLE:
            return False

    async def held_elsewhere(self, room: str) -> bool:
        """Whether some node holds the room in memory (its owner subscribes to the inbox,
        every node holding it to the agents channel), whatever Redis still has of it. A node
        still waiting for a new room's record subscribes to neither."""
        channels = (inbox_channel(room), agents_channel(room))
        counts = await self._call(lambda: self.redis.pubsub_numsub(*channels))
        return any(int(count) for _, count in counts)

    async def uptime(self) -> float:
        """Seconds since the Redis server started."""
        info = await self._call(lambda: self.redis.info("server"))
        return float(info["uptime_in_seconds"])

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        script = self._scripts[name]
        return await self._call(lambda: script(keys=keys, args=args))

    async def _call(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``fn`` with up to ATTEMPTS tries while Redis is unreachable.

        Every script is safe to run again: an append names its batch and the head
        it expects, so a retry of one that had landed is recognised, not doubled.
        """
        sent = False
        for attempt in range(ATTEMPTS):
            try:
                return await fn()
            except _UNREACHABLE as exc:
                sent = sent or not _at_connect(exc)
                # Idle pooled connections are as dead as this one: drop them, so the next
                # call connects afresh and a refusal is known never to have been sent.
                with contextlib.suppress(Exception):
                    await self.redis.connection_pool.disconnect(inuse_connections=False)
                if attempt == ATTEMPTS - 1:
                    raise StoreUnavailable(f"redis: {exc}", sent=sent) from exc
                await asyncio.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")

    # --- reads ---------------------------------------------------------------------------

    async def rooms(self) -> list[str]:
        names = await self._call(lambda: self.redis.zrangebylex(ROOMS_INDEX, "-", "+"))
        return [n.decode() for n in names]

    async def list_rooms(self, after: str | None, limit: int) -> list[RoomSummary]:
        """The index read from ``after`` (ZRANGEBYLEX), then each room's meta: O(log n + limit)."""
        low = "-" if after is None else f"({after}"
        names = await self._call(
            lambda: self.redis.zrangebylex(ROOMS_INDEX, low, "+", start=0, num=limit)
        )
        rooms = [n.decode() for n in names]

        async def metas() -> list[Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for room in rooms:
                    pipe.hmget(_key(room, "meta"), ["type", "epoch", "head"])
                return list(await pipe.execute())

        out = []
        for room, (type_name, epoch, head) in zip(rooms, await self._call(metas), strict=True):
            if epoch is not None:  # indexed, its keys since lost: not a stored room
                out.append(RoomSummary(room, type_name.decode(), epoch.decode(), int(head)))
        return out

    async def usage(self) -> StoreUsage:
        """Rooms from the name index; bytes as Redis's used_memory (the whole server's:
        give statecast a Redis of its own, or set Redis's maxmemory instead)."""

        async def read() -> tuple[int, dict[str, Any]]:
            return int(await self.redis.zcard(ROOMS_INDEX)), await self.redis.info("memory")

        rooms, info = await self._call(read)
        return StoreUsage(rooms, int(info.get("used_memory", 0)))

    async def room_summary(self, room: str) -> RoomSummary | None:
        type_name, epoch, head = await self._call(
            lambda: self.redis.hmget(_key(room, "meta"), ["type", "epoch", "head"])
        )
        if epoch is None:
            return None
        return RoomSummary(room, type_name.decode(), epoch.decode(), int(head))

    async def load(self, room: str) -> RoomRecord | None:
        async def read() -> list[Any]:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(_key(room, "meta"))
                pipe.get(_key(room, "state"))
                pipe.hgetall(_key(room, "acked"))
                pipe.xrange(_key(room, "log"))
                pipe.hgetall(_key(room, "answers"))
                return list(await pipe.execute())

        meta, state, acked, entries, answers = await self._call(read)
        if not meta or state is None:
            return None
        checkpoint_seq = int(meta[b"cp"])
        diffs = [
            (seq, fields[b"d"])
            for seq, fields in ((_seq(eid), f) for eid, f in entries)
            if seq > checkpoint_seq
        ]
        record = RoomRecord(
            epoch=meta[b"epoch"].decode(),
            type_name=meta[b"type"].decode(),
            checkpoint_seq=checkpoint_seq,
            checkpoint_state=bytes(state),
            acked={c.decode(): int(a) for c, a in acked.items()},
            diffs=diffs,
            answers={c.decode(): _unpack_answer(a) for c, a in answers.items()},
        )
        self._track(room, record.epoch, record.head)
        return record

    async def head(self, room: str) -> tuple[str, int] | None:
        """The room's (epoch, head) as Redis has it; None when its keys are gone."""
        epoch, head = await self._call(
            lambda: self.redis.hmget(_key(room, "meta"), ["epoch", "head"])
        )
        if epoch is None:
            return None
        return epoch.decode(), int(head)

    async def next_hello(self, room: str, floor: int = 0) -> int:
        """A number that orders agent HELLOs of the room across the cluster (newer: higher),
        above ``floor``, the highest the caller knows of (hello.lua)."""
        return int(await self._run("hello", [_key(room, "hellos")], [floor]))

    async def put_who(self, room: str, agents: list[str], spectators: int, ttl: float) -> None:
        """This node's field of ``sc:{R}:who``, valid for ``ttl`` seconds (None: drop it)."""
        key, ms = _key(room, "who"), int(ttl * 1000)
        value = msgpack.packb([agents, spectators, int(time.time() * 1000) + ms])

        async def write() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                if agents or spectators:
                    pipe.hset(key, self.node_id, value)
                    pipe.pexpire(key, ms)
                else:
                    pipe.hdel(key, self.node_id)
                await pipe.execute()

        await self._call(write)

    async def who(self, rooms: list[str]) -> dict[str, tuple[list[str], int]]:
        """Each room's agents present and spectators connected over every node (fields
        past their time are a node that stopped refreshing: ignored). One round trip."""

        async def read() -> list[Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for room in rooms:
                    pipe.hgetall(_key(room, "who"))
                return list(await pipe.execute())

        now = int(time.time() * 1000)
        out: dict[str, tuple[list[str], int]] = {}
        for room, fields in zip(rooms, await self._call(read), strict=True):
            agents: set[str] = set()
            spectators = 0
            for value in fields.values():
                node_agents, node_spectators, until = msgpack.unpackb(value, raw=False)
                if until >= now:
                    agents.update(node_agents)
                    spectators += node_spectators
            out[room] = (sorted(agents), spectators)
        return out

    async def all_acked(self, room: str) -> dict[str, int]:
        acked = await self._call(lambda: self.redis.hgetall(_key(room, "acked")))
        return {c.decode(): int(a) for c, a in acked.items()}

    async def diffs_after(self, room: str, seq: int) -> list[tuple[int, bytes]]:
        entries = await self._call(lambda: self.redis.xrange(_key(room, "log"), f"{seq + 1}-0"))
        return [(_seq(eid), bytes(fields[b"d"])) for eid, fields in entries]

    # --- writes --------------------------------------------------------------------------

    def _track(self, room: str, epoch: str, head: int) -> None:
        held = self._held.get(room)
        if held is None:
            self._held[room] = _Held(epoch, head)
        else:
            held.epoch, held.head = epoch, head

    def _token(self, room: str) -> str:
        held = self._held.get(room)
        return "" if held is None or held.token is None else str(held.token)

    def _room_keys(self, room: str) -> list[str]:
        return [_key(room, p) for p in ("meta", "log", "acked", "fence", "state", "answers")]

    async def create(self, room: str, record: RoomRecord) -> None:
        await self._create(room, record, only_new=False)

    async def create_if_absent(self, room: str, record: RoomRecord) -> bool:
        """Create the room unless it exists; False (nothing written) when it does."""
        return await self._create(room, record, only_new=True)

    async def _create(self, room: str, record: RoomRecord, *, only_new: bool) -> bool:
        args: list[Any] = [
            self._token(room),
            record.epoch,
            record.type_name,
            record.checkpoint_seq,
            record.checkpoint_state,
            "1" if only_new else "0",
            len(record.diffs),
        ]
        for seq, encoded in record.diffs:
            args += [seq, encoded]
        args.append(len(record.acked))
        for client, aid in record.acked.items():
            args += [client, aid]
        args.append(len(record.answers))
        for client, (aid, answer) in record.answers.items():
            args += [client, _pack_answer(aid, answer)]
        result = int(await self._run("create", self._room_keys(room), args))
        if result == -2:
            raise Fenced(f"room {room}: another node owns it")
        if result == 0:
            return False
        await self._call(lambda: self.redis.zadd(ROOMS_INDEX, {room: 0}))
        self._track(room, record.epoch, record.head)
        return True

    async def append(self, room: str, changes: Sequence[StoredChange]) -> None:
        held = self._held.get(room)
        if held is None:
            raise Fenced(f"room {room}: not loaded by this node")
        diffs = [(c.seq, c.diff) for c in changes if c.diff is not None]
        acked: dict[str, int] = {}
        answers: dict[str, bytes] = {}
        for change in changes:
            if change.client is not None:
                acked[change.client] = change.aid
                if change.answer is not None:
                    answers[change.client] = _pack_answer(change.aid, change.answer)
        last = diffs[-1][0] if diffs else held.head
        batch = msgpack.packb(
            [held.epoch, held.head, last, b"".join(d for _, d in diffs), acked],
            use_bin_type=True,
        )
        what = (held.epoch, held.head, tuple((c.seq, c.client, c.aid) for c in changes))
        if held.unsure is not None and held.unsure[0] == what:
            batch_id = held.unsure[1]
        else:
            batch_id = f"{self.node_id}:{next(self._batches)}"
        args: list[Any] = [
            self._token(room),
            held.epoch,
            held.head,
            batch_id,
            feed_channel(room),
            batch,
            len(diffs),
        ]
        for seq, encoded in diffs:
            args += [seq, encoded]
        args.append(len(acked))
        for client, aid in acked.items():
            args += [client, aid]
        args.append(len(answers))
        for client, packed in answers.items():
            args += [client, packed]
        keys = [_key(room, p) for p in ("meta", "log", "acked", "fence", "answers")]
        try:
            code, head = await self._run("append", keys, args)
        except StoreUnavailable as exc:
            held.unsure = (what, batch_id) if exc.sent else None
            raise
        held.unsure = None
        code = int(code)
        if code == -1:
            raise RoomLost(f"room {room}: its keys are gone from redis")
        if code < 0:
            reason = {-2: "fenced by a newer lease", -3: "another epoch", -4: "the log moved on"}
            raise Fenced(f"room {room}: write refused ({reason[code]}, head {int(head)})")
        previous, held.head = held.head, last
        try:
            await self._wait_replicas()
        except StoreUnavailable:
            # Written on the primary, not yet held by the replicas: the writer sends the
            # same batch again, which the script recognises by its id (never written twice),
            # and waits for the replicas again before anything is acknowledged.
            held.head, held.unsure = previous, (what, batch_id)
            raise

    async def _wait_replicas(self) -> None:
        if self.wait_replicas <= 0:
            return
        acked = int(
            await self._call(lambda: self.redis.wait(self.wait_replicas, self.wait_timeout_ms))
        )
        if acked < self.wait_replicas:
            raise StoreUnavailable(f"only {acked} of {self.wait_replicas} replicas confirmed")

    async def checkpoint(self, room: str, seq: int, state: bytes, acked: dict[str, int]) -> None:
        held = self._held.get(room)
        if held is None:
            raise Fenced(f"room {room}: not loaded by this node")
        args: list[Any] = [self._token(room), held.epoch, seq, state, self.retain_diffs]
        args.append(len(acked))
        for client, aid in acked.items():
            args += [client, aid]
        code = int(await self._run("checkpoint", self._room_keys(room), args))
        if code == -1:
            raise RoomLost(f"room {room}: its keys are gone from redis")
        if code < 0:
            raise Fenced(f"room {room}: checkpoint refused ({code})")

    # --- leases --------------------------------------------------------------------------

    async def acquire(self, room: str, ttl: float) -> int | None:
        """Take the room's lease with a new fencing token; None when another node holds it."""
        keys = [_key(room, "lease"), _key(room, "fence")]
        token = int(await self._run("acquire", keys, [self.node_id, int(ttl * 1000)]))
        if token == 0:
            return None
        held = self._held.setdefault(room, _Held("", 0))
        held.token = token
        return token

    async def renew(self, rooms: Sequence[str], ttl: float) -> set[str]:
        """Extend every lease held for ``rooms``; returns the rooms whose lease is lost.

        A room whose lease and keys are both gone (Redis lost them) is in :attr:`gone`
        after the call, not in the result: no other node took it."""
        owned = [(r, self._held[r].token) for r in rooms if r in self._held]
        self.gone = set()
        if not owned:
            return set()

        async def run() -> list[Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for room, token in owned:
                    await self._scripts["renew"](
                        keys=[_key(room, "lease"), _key(room, "meta")],
                        args=[self.node_id, token, int(ttl * 1000)],
                        client=pipe,
                    )
                return list(await pipe.execute())

        results = [int(r) for r in await self._call(run)]
        self.gone = {room for (room, _), r in zip(owned, results, strict=True) if r == 2}
        return {room for (room, _), r in zip(owned, results, strict=True) if r == 0}

    async def release(self, room: str, message: bytes) -> bool:
        """Give the lease back and publish ``message`` on the room's feed; forget the room."""
        held = self._held.pop(room, None)
        if held is None or held.token is None:
            return False
        keys = [_key(room, "lease")]
        args = [self.node_id, held.token, feed_channel(room), message]
        return bool(await self._run("release", keys, args))

    def forget(self, room: str) -> None:
        """Stop writing for the room (its lease is lost or given up)."""
        self._held.pop(room, None)

    # --- the bus -------------------------------------------------------------------------

    async def publish(self, channel: str, message: bytes) -> int:
        """Publish; the number of subscribers that received it."""
        return int(await self._call(lambda: self.redis.publish(channel, message)))

    def bus(
        self,
        on_message: Callable[[str, bytes], None],
        on_reconnect: Callable[[], None],
    ) -> Bus:
        return Bus(self.url, self.node_id, self.timeout, on_message, on_reconnect)


class Bus:
    """One pub/sub connection per node, re-established (and re-subscribed) whenever it drops.

    Redis closes a subscriber that lags past its output buffer limit; messages
    published meanwhile are lost to it. ``on_reconnect`` runs after every
    re-subscription so the caller repairs what it missed from the logs.
    """

    def __init__(
        self,
        url: str,
        node_id: str,
        timeout: float,
        on_message: Callable[[str, bytes], None],
        on_reconnect: Callable[[], None],
    ) -> None:
        # No retries: a silent reconnect inside redis-py would hide a gap.
        self._redis = aioredis.from_url(
            url,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            client_name=f"statecast-{node_id}-bus",
        )
        self._on_message = on_message
        self._on_reconnect = on_reconnect
        #: The node's own channel is always subscribed: owners answer forwarded actions on it.
        self.channels: set[str] = {node_channel(node_id)}
        self.connected = asyncio.Event()
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="redis bus")

    async def subscribe(self, channel: str) -> None:
        self.channels.add(channel)
        if self._pubsub is not None and self.connected.is_set():
            with contextlib.suppress(RedisError, *_UNREACHABLE):
                await self._pubsub.subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        self.channels.discard(channel)
        if self._pubsub is not None and self.connected.is_set():
            with contextlib.suppress(RedisError, *_UNREACHABLE):
                await self._pubsub.unsubscribe(channel)

    async def _run(self) -> None:
        first = True
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*self.channels)
                self._pubsub = pubsub
                self.connected.set()
                if not first:
                    log.info("redis bus reconnected", channels=len(self.channels))
                    self._on_reconnect()
                first = False
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "message":
                        self._on_message(message["channel"].decode(), message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, *_UNREACHABLE) as exc:
                if self.connected.is_set():
                    log.warning("redis bus lost", error=str(exc))
                self.connected.clear()
                self._pubsub = None
                first = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                await asyncio.sleep(0.2)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        await self._redis.aclose()


def _at_connect(exc: BaseException) -> bool:
    """Whether the error came from opening the connection (so nothing was sent on it)."""
    return isinstance(exc, RedisConnectionError) and "connecting to" in str(exc)


def _seq(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


def _safe(url: str) -> str:
    """The URL without its password, for logs."""
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"


def _pack_answer(aid: int, answer: bytes) -> bytes:
    """A client's last answer as the answers hash holds it: msgpack ``[aid, answer]``."""
    return bytes(msgpack.packb([aid, answer], use_bin_type=True))


def _unpack_answer(packed: bytes) -> tuple[int, bytes]:
    aid, answer = msgpack.unpackb(packed, raw=False)
    return int(aid), bytes(answer)

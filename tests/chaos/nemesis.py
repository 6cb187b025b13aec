"""The nemesis: a seeded schedule of real faults against a cluster's processes.

A schedule is drawn from one seed (:func:`schedule`), so a failing run is replayed by
its seed; the event loop's interleaving is not, but the faults, their order, their
targets' roles and their durations are. Each step is one fault, or two at once, held
for a random time and then healed; a quiet gap follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tests.cluster_nodes import Node
from tests.redis_server import RedisServer

#: Each fault, and how often a step draws it.
FAULTS: dict[str, int] = {
    "kill_owner": 3,  # kill -9 of the room's owner, restarted after the fault
    "kill_follower": 2,  # kill -9 of a node that follows the room, restarted
    "pause_owner": 3,  # SIGSTOP of the owner past its lease, then SIGCONT
    "term_node": 2,  # SIGTERM (graceful hand-over), restarted
    "pause_redis": 2,  # SIGSTOP of Redis, then SIGCONT
    "restart_redis": 1,  # Redis killed and restarted with its data (AOF)
    "restart_redis_empty": 1,  # Redis killed and restarted with nothing
    "kill_bus": 2,  # CLIENT KILL of every node's pub/sub connection
    "cut_redis_link": 2,  # one node cut from Redis (its proxy), its clients stay
    "cut_clients": 3,  # a few client connections aborted mid-stream
}
#: Faults that may overlap another (they touch no process the other restarts).
OVERLAPPING = ("kill_bus", "cut_clients", "pause_redis", "cut_redis_link")


@dataclass(frozen=True)
class Step:
    faults: tuple[str, ...]
    hold: float
    quiet: float
    pick: int  # which node, where the fault picks among several


def schedule(seed: int, steps: int) -> list[Step]:
    rng = random.Random(seed)
    kinds, weights = zip(*FAULTS.items(), strict=True)
    out = []
    for _ in range(steps):
        first = rng.choices(kinds, weights)[0]
        faults: tuple[str, ...] = (first,)
        if rng.random() < 0.3:
            second = rng.choice([k for k in OVERLAPPING if k != first])
            faults = (first, second)
        hold = rng.uniform(1.5, 3.0) if "pause_owner" in faults else rng.uniform(0.3, 2.0)
        out.append(Step(faults, round(hold, 2), round(rng.uniform(0.5, 1.5), 2), rng.randrange(99)))
    return out


class LinkProxy:
    """A TCP proxy between one node and Redis that the nemesis can cut and heal."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.open = True
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        self.open = False
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    def heal(self) -> None:
        self.open = True

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._links.update((writer, up_writer))
        pumps = [
            asyncio.ensure_future(self._pump(reader, up_writer)),
            asyncio.ensure_future(self._pump(up_reader, writer)),
        ]
        # Either side closing closes both, as a TCP connection does end to end (a node
        # subscribed to Redis sends nothing, so it must hear of Redis' close this way).
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        for w in (writer, up_writer):
            self._links.discard(w)
            w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = await reader.read(65536)
                if not data or not self.open:
                    return
                writer.write(data)
                await writer.drain()


def admin(port: int) -> aioredis.Redis:
    """A client for the nemesis' own look-ups, failing fast: Redis may be the one paused,
    and a fault's injection must not hold up the heal of another."""
    return aioredis.Redis(
        port=port, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )


def node_id(node: Node) -> str | None:
    """The id the node's current process logged at start ("cluster node started")."""
    found = None
    with open(node.log.name, encoding="utf-8", errors="replace") as f:
        for line in f:
            if "cluster node started" in line:
                with contextlib.suppress(ValueError):
                    found = json.loads(line).get("node")
    return found


class Nemesis:
    def __init__(
        self,
        redis_server: RedisServer,
        nodes: list[Node],
        links: list[LinkProxy],
        room: str,
        cut_clients: object,
    ) -> None:
        self.redis = redis_server
        self.nodes = nodes
        self.links = links
        self.room = room
        self.cut_clients = cut_clients
        self.injected: dict[str, int] = {}
        self.log: list[str] = []
        #: (faults, start, end) of each step, in event loop time.
        self.windows: list[tuple[tuple[str, ...], float, float]] = []

    async def owner(self) -> int | None:
        client = admin(self.redis.port)
        try:
            holder = await client.get(f"sc:{{{self.room}}}:lease")
        except Exception:
            return None
        finally:
            await client.aclose()
        if holder is None:
            return None
        holder_id = holder.decode().split()[0]
        for i, node in enumerate(self.nodes):
            if node_id(node) == holder_id:
                return i
        return None

    async def run(self, steps: list[Step]) -> None:
        loop = asyncio.get_running_loop()
        for step in steps:
            started = loop.time()
            heals = []
            for fault in step.faults:
                heal = await self._inject(fault, step.pick)
                self.injected[fault] = self.injected.get(fault, 0) + 1
                heals.append(heal)
            await asyncio.sleep(step.hold)
            for heal in reversed(heals):
                await heal()
            await asyncio.sleep(step.quiet)
            self.windows.append((step.faults, started, loop.time()))

    async def _inject(self, fault: str, pick: int) -> object:  # returns an async heal()
        owner = await self.owner()
        if owner is None:
            owner = pick % len(self.nodes)
        followers = [i for i in range(len(self.nodes)) if i != owner]
        self.log.append(f"{fault} (owner n{owner}, pick {pick})")

        async def nothing() -> None:
            return None

        if fault in ("kill_owner", "kill_follower", "term_node"):
            target = {
                "kill_owner": owner,
                "kill_follower": followers[pick % len(followers)],
                "term_node": pick % len(self.nodes),
            }[fault]
            node = self.nodes[target]
            if fault == "term_node":
                await node.stop()
            else:
                node.signal(signal.SIGKILL)
                await node.wait()

            async def restart() -> None:
                await node.start()

            return restart
        if fault == "pause_owner":
            node = self.nodes[owner]
            node.signal(signal.SIGSTOP)

            async def resume() -> None:
                node.signal(signal.SIGCONT)

            return resume
        if fault == "pause_redis":
            if self.redis.process is None:  # overlapping a restart: Redis is down already
                return nothing
            pid = self.redis.process.pid
            os.kill(pid, signal.SIGSTOP)

            async def resume_redis() -> None:
                os.kill(pid, signal.SIGCONT)

            return resume_redis
        if fault in ("restart_redis", "restart_redis_empty"):
            self.redis.stop()
            if fault == "restart_redis_empty":
                shutil.rmtree(self.redis.dir, ignore_errors=True)
                os.makedirs(self.redis.dir)

            async def start_redis() -> None:
                await asyncio.to_thread(self.redis.start)

            return start_redis
        if fault == "kill_bus":
            client = admin(self.redis.port)
            with contextlib.suppress(Exception):
                await client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            with contextlib.suppress(Exception):
                await client.aclose()
            return nothing
        if fault == "cut_redis_link":
            link = self.links[pick % len(self.links)]
            link.cut()

            async def heal_link() -> None:
                link.heal()

            return heal_link
        if fault == "cut_clients":
            assert callable(self.cut_clients)
            self.cut_clients(pick)
            return nothing
        raise AssertionError(fault)

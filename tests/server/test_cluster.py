"""The cluster: real ``statecast serve`` processes on one real Redis (tests/cluster_nodes.py).

Each test asserts what clients see: every client's digest equals ``/head``'s on
every node, no seq gap while live, every acknowledged action applied exactly
once (the counter a client's actions increment equals its acknowledged aids).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from tests.cluster_client import Roamer
from tests.cluster_nodes import CLUSTER_FLAGS, Node, cluster
from tests.helpers import SCALE, bare
from tests.redis_server import RedisServer, running_redis

FLAGS = CLUSTER_FLAGS


@pytest.fixture
async def redis_node() -> AsyncIterator[RedisServer]:
    """A Redis of this test's own (the fault tests stop and restart it)."""
    with running_redis() as server:
        yield server


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = 30) -> None:
    """Wait until ``check`` holds (polled: it reads other processes)."""
    async with asyncio.timeout(timeout * SCALE):
        for _ in itertools.count():
            result = check()
            if result if isinstance(result, bool) else await result:
                return
            await asyncio.sleep(0.02)


async def create_on(node: Node, room: str) -> None:
    """Create the room through ``node`` (its owner then) with an agent's empty action:
    spectators never create rooms."""
    status, _ = await node.post(
        f"/rooms/{room}/actions", {"client": "setup", "aid": 1, "name": "patch", "args": []}
    )
    assert status == 200


def bump(client: str, i: int) -> list[Any]:
    """An action whose effect counts: the client's own counter and its last value."""
    return [[0, ["by", client], i]]


async def heads(nodes: list[Node], room: str) -> list[dict[str, Any]]:
    out = []
    for node in nodes:
        status, body = await node.get(f"/rooms/{room}/head")
        assert status == 200, (node.name, body)
        out.append(body)
    return out


async def settle(nodes: list[Node], clients: list[Roamer], room: str) -> dict[str, Any]:
    """Wait until every node and every client shows one head; return it."""
    async with asyncio.timeout(20 * SCALE):
        while True:
            hs = await heads(nodes, room)
            first = hs[0]
            same_nodes = all(
                (h["epoch"], h["seq"], h["digest"])
                == (first["epoch"], first["seq"], first["digest"])
                for h in hs
            )
            same_clients = all(
                c.sync.epoch == first["epoch"] and c.seq == first["seq"] for c in clients
            )
            if same_nodes and same_clients:
                for c in clients:
                    assert c.digest() == first["digest"]
                    assert c.duplicates == [], c.duplicates  # no DIFF delivered twice
                return first
            await asyncio.sleep(0.05)


async def test_three_nodes_agree_and_apply_each_action_once(redis_node: RedisServer) -> None:
    """Agents and spectators spread over three nodes: one line of seqs, one state, no gap."""
    async with cluster(redis_node.url, 3, *FLAGS) as nodes:
        room = "shared"
        agents = [Roamer([nodes[i % 3].room_url(room)], client=f"a{i}") for i in range(6)]
        spectators = [Roamer([nodes[i % 3].room_url(room)], role="spectator") for i in range(6)]
        for c in agents + spectators:
            await c.start()
        rng = random.Random(7)

        async def run(agent: Roamer, i: int) -> list[tuple[str, Any]]:
            outcomes = []
            for n in range(1, 16):
                outcomes.append(await agent.act("patch", bump(agent.sync.client or "", n)))
                await asyncio.sleep(rng.random() * 0.01)
            return outcomes

        results = await asyncio.gather(*(run(a, i) for i, a in enumerate(agents)))
        for outcomes in results:
            assert all(kind == "ack" and seq is not None for kind, seq in outcomes), outcomes
        seqs = sorted(seq for outcomes in results for _, seq in outcomes)
        assert seqs == list(range(1, len(seqs) + 1))  # every diff once, no seq twice
        head = await settle(nodes, agents + spectators, room)
        assert head["seq"] == 6 * 15
        for node, aid in ((nodes[1], 1), (nodes[2], 2)):  # HTTP actions on any node too
            body = {"client": "h", "aid": aid, "name": "patch", "args": [[0, ["h"], aid]]}
            assert await node.post(f"/rooms/{room}/actions", body) == (200, {"seq": 90 + aid})
        assert await nodes[2].post(f"/rooms/{room}/actions", body) == (200, {"seq": None})
        assert await nodes[0].get(f"/rooms/{room}/clients/h") == (200, {"client": "h", "acked": 2})
        head = await settle(nodes, agents + spectators, room)
        for c in agents + spectators:
            assert c.gaps == [] and c.closes == []
            assert c.sync.state == {"by": {f"a{i}": 15 for i in range(6)}, "h": 2}
        for c in agents + spectators:
            await c.close()


class Load:
    """Agents acting in a loop, each appending its own counter to its own list in the state.

    An acknowledged action is in the list once; a refused one (unavailable) is not.
    """

    def __init__(self, agents: list[Roamer]) -> None:
        self.agents = agents
        self.acked: dict[str, list[int]] = {a.sync.client or "": [] for a in agents}
        self.refused: dict[str, list[int]] = {a.sync.client or "": [] for a in agents}
        self.seqs: list[int] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _run(self, agent: Roamer) -> None:
        client = agent.sync.client or ""
        kind, seq = await agent.act("patch", [[0, ["log", client], []]])
        assert kind == "ack", (kind, seq)
        n = 0
        while not self._stop.is_set() and n < 400:
            n += 1
            kind, seq = await agent.act("patch", [[2, ["log", client, -1], n]])
            if kind == "ack":
                self.acked[client].append(n)
                if seq is not None:
                    self.seqs.append(seq)
            else:
                assert seq == "unavailable", (kind, seq)
                self.refused[client].append(n)
            await asyncio.sleep(0.01)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(a)) for a in self.agents]

    async def stop(self) -> None:
        self._stop.set()
        async with asyncio.timeout(30 * SCALE):
            await asyncio.gather(*self._tasks)

    def check(self, state: dict[str, Any]) -> None:
        """Every acknowledged action applied exactly once, nothing refused applied."""
        for client, acked in self.acked.items():
            assert state["log"][client] == acked, client
        assert len(self.seqs) == len(set(self.seqs))  # no seq named two actions

    async def progress(self, count: int = 5) -> None:
        """Wait until every agent has had ``count`` more actions acknowledged."""
        marks = {c: len(v) for c, v in self.acked.items()}
        await eventually(lambda: all(len(v) >= marks[c] + count for c, v in self.acked.items()))


async def start_all(*clients: Roamer) -> None:
    for c in clients:
        await c.start()


async def agent_and_watcher(nodes: list[Node], room: str) -> tuple[Roamer, Roamer]:
    """Agent "a" on node 0 (which loads the room first: its owner), a spectator on node 1."""
    agent = Roamer([nodes[0].room_url(room)], client="a")
    await agent.start()
    watcher = Roamer([nodes[1].room_url(room)], role="spectator")
    await watcher.start()
    return agent, watcher


async def close_all(*clients: Roamer) -> None:
    for c in clients:
        await c.close()


async def test_kill_9_the_owner_under_load(redis_node: RedisServer) -> None:
    """The owner dies: others never disconnect, a follower takes over in the same epoch,
    nothing acknowledged is lost or applied twice, the dead node's clients resume by replay."""
    async with cluster(redis_node.url, 3, *FLAGS) as nodes:
        room = "kill9"
        urls = [n.room_url(room) for n in nodes]
        owner_agent = Roamer(urls, client="a0")  # first: its node owns the room
        await owner_agent.start()
        others = [Roamer(urls[1:], client="a1"), Roamer(urls[2:] + urls[1:2], client="a2")]
        spectators = [Roamer(urls, role="spectator"), Roamer(urls[1:], role="spectator")]
        await start_all(*others, *spectators)
        load = Load([owner_agent, *others])
        load.start()
        await load.progress()
        nodes[0].signal(signal.SIGKILL)
        await nodes[0].wait()
        await load.progress(10)  # a new owner serves every agent
        await load.stop()
        survivors = nodes[1:]
        clients = [owner_agent, *others, *spectators]
        head = await settle(survivors, clients, room)
        for c in clients:
            assert c.gaps == []
            assert len(set(c.epochs)) == 1, c.epochs  # the same epoch throughout
        for c in (*others, spectators[1]):
            assert c.closes == []  # clients of the survivors never saw a disconnect
        assert owner_agent.closes and owner_agent.syncs[-1] in ("replay", "current")
        assert spectators[0].syncs[-1] in ("replay", "current")
        _, body = await survivors[0].get(f"/rooms/{room}/state")
        load.check(body["state"])
        assert head["seq"] == 3 + sum(len(v) for v in load.acked.values())
        await close_all(*clients)


async def test_a_paused_owner_is_fenced_and_follows(redis_node: RedisServer) -> None:
    """SIGSTOP the owner past its lease, a follower takes over and writes, SIGCONT: the old
    owner's writes are refused, no seq is written twice, and it follows the new owner."""
    async with cluster(redis_node.url, 2, *FLAGS) as nodes:
        room = "paused"
        old = Roamer([nodes[0].room_url(room)], client="old")
        await old.start()
        new = Roamer([nodes[1].room_url(room)], client="new")
        watcher = Roamer([nodes[1].room_url(room)], role="spectator")
        await start_all(new, watcher)
        assert await old.act("patch", [[0, ["old"], 1]]) == ("ack", 1)
        nodes[0].signal(signal.SIGSTOP)
        try:
            pending = asyncio.create_task(old.act("patch", [[0, ["old"], 2]]))  # waits in a socket
            assert await new.act("patch", [[0, ["new"], 1]]) == (
                "ack",
                2,
            )  # after the lease expired
            assert await new.act("patch", [[0, ["new"], 2]]) == ("ack", 3)
        finally:
            nodes[0].signal(signal.SIGCONT)
        kind, seq = await pending
        assert kind == "ack" and seq == 4  # forwarded to the new owner, not written by the old
        head = await settle(nodes, [old, new, watcher], room)
        assert head["seq"] == 4
        assert old.sync.state == {"old": 2, "new": 2}
        assert "stops writing" in nodes[0].output()
        assert new.closes == [] and watcher.closes == [] and old.gaps == []
        await close_all(old, new, watcher)


async def test_redis_restarted_empty_starts_a_new_epoch(redis_node: RedisServer) -> None:
    """Redis loses every key: the owner's state becomes seq 0 of a new epoch, every client
    gets a SNAPSHOT of (new epoch, 0) with the state it had, the next diff is seq 1, and
    nothing acknowledged is lost or applied twice."""
    async with cluster(redis_node.url, 2, *FLAGS) as nodes:
        room = "amnesia"
        agent, watcher = await agent_and_watcher(nodes, room)
        for i in range(1, 4):
            assert await agent.act("patch", [[0, ["k"], i]]) == ("ack", i)
        before = await settle(nodes, [agent, watcher], room)
        redis_node.restart_empty()
        assert await agent.act("patch", [[0, ["j"], 1]]) == ("ack", 1)
        after = await settle(nodes, [agent, watcher], room)
        assert after["epoch"] != before["epoch"] and after["seq"] == 1
        for c in (agent, watcher):
            assert c.snapshots[-1] == (after["epoch"], 0, {"k": 3})
            assert c.sync.state == {"k": 3, "j": 1}
        assert watcher.epochs == [before["epoch"], after["epoch"]]
        assert await nodes[1].get(f"/rooms/{room}/clients/a") == (200, {"client": "a", "acked": 4})
        assert agent.gaps == [] and watcher.gaps == []
        await close_all(agent, watcher)


async def degraded(node: Node) -> bool:
    status, body = await node.get("/healthz")
    return status == 503 and body["code"] == "degraded"


async def test_redis_down_for_a_while(tmp_path: Any) -> None:
    """Redis unreachable: actions get `unavailable` (HTTP 503) at once, /healthz is degraded,
    spectators stay; when it returns the cluster recovers with nothing acknowledged lost."""
    with running_redis(aof=True) as redis:
        async with cluster(redis.url, 2, *FLAGS) as nodes:
            room = "outage"
            agent, watcher = await agent_and_watcher(nodes, room)
            assert await agent.act("patch", [[0, ["k"], 1]]) == ("ack", 1)
            await settle(nodes, [agent, watcher], room)
            redis.stop()
            await eventually(lambda: degraded(nodes[0]))
            async with asyncio.timeout(5 * SCALE):  # prompt, not hanging
                assert await agent.act("patch", [[0, ["k"], 2]]) == ("error", "unavailable")
            status, body = await nodes[1].post(
                f"/rooms/{room}/actions", {"client": "h", "aid": 1, "name": "patch", "args": []}
            )
            assert status == 503 and body["code"] == "unavailable"
            # A room no node holds cannot be loaded: a clear 503, and a HELLO closed 1011
            # with its reason (retry with backoff), never a hang or a traceback.
            status, body = await nodes[1].get("/rooms/not-loaded/state")
            assert status == 503 and body["code"] == "unavailable"
            async with bare(nodes[0].room_url("not-loaded")) as late:
                await late.send([1, {"v": 1, "role": "spectator"}])
                assert await late.closed() == 1011
                assert "store" in (late.ws.close_reason or "")
            for node in nodes:
                status, body = await node.get("/healthz")
                assert status == 503 and body["code"] == "degraded"
            redis.start()

            async def acked() -> bool:
                return (await agent.act("patch", [[0, ["k"], 3]]))[0] == "ack"

            await eventually(acked)
            await settle(nodes, [agent, watcher], room)
            assert agent.sync.state == {"k": 3} and watcher.sync.state == {"k": 3}
            assert watcher.closes == [] and watcher.gaps == []
            for node in nodes:
                assert (await node.get("/healthz"))[0] == 200
            await close_all(agent, watcher)


async def test_a_followers_bus_connection_killed(redis_node: RedisServer) -> None:
    """CLIENT KILL of the nodes' pub/sub connections while diffs flow: no gap, no duplicate."""
    import redis as redis_client

    async with cluster(redis_node.url, 2, *FLAGS) as nodes:
        room = "cut"
        agent = Roamer([nodes[0].room_url(room)], client="a")
        await agent.start()
        watchers = [Roamer([nodes[1].room_url(room)], role="spectator") for _ in range(2)]
        await start_all(*watchers)
        load = Load([agent])
        load.start()
        await load.progress()
        admin = redis_client.Redis(port=redis_node.port)
        try:
            for _ in range(3):
                await eventually(lambda: len(admin.client_list(_type="pubsub")) == 2)
                assert int(admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")) == 2
                await load.progress()
        finally:
            admin.close()
        await load.stop()
        await settle(nodes, [agent, *watchers], room)
        for w in watchers:
            assert w.gaps == [] and w.closes == []
        _, body = await nodes[1].get(f"/rooms/{room}/state")
        load.check(body["state"])
        await close_all(agent, *watchers)


async def test_sigterm_hands_rooms_over(redis_node: RedisServer) -> None:
    """A node stopped with SIGTERM releases its rooms at once and closes its clients with
    1012; they resume on another node; nothing acknowledged is lost."""
    async with cluster(redis_node.url, 3, *FLAGS) as nodes:
        room = "handover"
        urls = [n.room_url(room) for n in nodes]
        leaving = Roamer(urls, client="a0")
        await leaving.start()
        staying = Roamer(urls[1:], client="a1")
        watchers = [Roamer(urls, role="spectator"), Roamer(urls[2:], role="spectator")]
        await start_all(staying, *watchers)
        load = Load([leaving, staying])
        load.start()
        await load.progress()
        nodes[0].signal(signal.SIGTERM)
        try:
            await nodes[0].wait(8)
        except TimeoutError:
            nodes[0].signal(signal.SIGUSR1)
            await asyncio.sleep(1)
            raise
        assert await nodes[0].wait() == 0
        await load.progress()
        await load.stop()
        clients = [leaving, staying, *watchers]
        await settle(nodes[1:], clients, room)
        assert leaving.closes == [1012] and watchers[0].closes == [1012]
        assert staying.closes == [] and watchers[1].closes == []
        for c in clients:
            assert c.gaps == [] and len(set(c.epochs)) == 1
        _, body = await nodes[1].get(f"/rooms/{room}/state")
        load.check(body["state"])
        assert "room lease taken" in nodes[1].output() + nodes[2].output()
        await close_all(*clients)


async def test_an_idle_room_unloads_and_gives_its_lease_up(redis_node: RedisServer) -> None:
    """An owner whose room goes idle checkpoints it and releases the lease; the next node
    that needs the room owns it and goes on from the same epoch and seq."""
    import redis as redis_client

    # A lease far longer than the test: the key can only go because it was released, not
    # because it expired.
    flags = (*FLAGS, "--idle-unload", "0.3", "--lease-ttl", "30")
    async with cluster(redis_node.url, 2, *flags) as nodes:
        room = "idle"
        first = Roamer([nodes[0].room_url(room)], client="a")
        await first.start()
        assert await first.act("patch", [[0, ["k"], 1]]) == ("ack", 1)
        epoch = first.sync.epoch
        await first.close()
        admin = redis_client.Redis(port=redis_node.port)
        try:
            await eventually(lambda: admin.get(f"sc:{{{room}}}:lease") is None)
        finally:
            admin.close()
        second = Roamer([nodes[1].room_url(room)], client="a")
        await second.start()
        assert second.sync.epoch == epoch and second.sync.acked == 1
        assert await second.act("patch", [[0, ["k"], 2]]) == ("ack", 2)
        assert "room lease taken" in nodes[1].output()
        await second.close()


async def test_one_connection_per_agent_id_across_nodes(redis_node: RedisServer) -> None:
    """An agent id that connects on another node takes over: the older connection, on the
    first node, is closed with 4009; the newer one acts."""
    async with cluster(redis_node.url, 2, *FLAGS) as nodes:
        room = "one-id"
        async with bare(nodes[0].room_url(room)) as older:
            await older.hello("agent", client="x")
            async with bare(nodes[1].room_url(room)) as newer:
                welcome = await newer.hello("agent", client="x")
                assert await older.closed() == 4009
                await newer.send([4, welcome["acked"] + 1, "patch", [[0, ["k"], 1]]])
                assert (await newer.recv_type(7))[1] == welcome["acked"] + 1


async def test_wait_replicas_acks_once_a_replica_holds_the_diff(redis_node: RedisServer) -> None:
    """With --wait-replicas 1 an ACK comes only once the replica has the batch: with the
    replica stopped (SIGSTOP), the batch is on the primary and the node has found the replica
    silent, and still no ACK; once the replica runs again, the ACK comes."""
    import redis as redis_client

    log = "sc:{replicated}:log"
    with (
        running_redis(replica_of=redis_node.port) as replica,
        contextlib.closing(redis_client.Redis(port=replica.port)) as view,
        contextlib.closing(redis_client.Redis(port=redis_node.port)) as primary,
    ):
        await eventually(lambda: view.info("replication")["master_link_status"] == "up")
        async with cluster(redis_node.url, 1, *FLAGS, "--wait-replicas", "1") as nodes:
            agent = Roamer([nodes[0].room_url("replicated")], client="a")
            await agent.start()
            assert await agent.act("patch", [[0, ["k"], 1]]) == ("ack", 1)
            assert view.xlen(log) == 1  # on the replica before the ACK
            assert replica.process is not None
            os.kill(replica.process.pid, signal.SIGSTOP)
            try:
                aid = agent.send("patch", [[0, ["k"], 2]])
                await eventually(lambda: primary.xlen(log) == 2)  # written on the primary
                # The node's WAIT timed out (the replica is silent): the ACK would be out by
                # now if the node did not wait for the replica.
                await eventually(lambda: "only 0 of 1 replicas confirmed" in nodes[0].output())
                assert aid not in agent.outcomes
            finally:
                os.kill(replica.process.pid, signal.SIGCONT)
            await eventually(lambda: aid in agent.outcomes)
            assert agent.outcomes[aid] == ("ack", 2)
            assert view.xlen(log) == 2
            await agent.close()


GRACE = 0.5
PRESENCE = (*FLAGS, "--document-presence", "--leave-grace", str(GRACE))


async def test_presence_of_agents_on_any_node(redis_node: RedisServer) -> None:
    """An agent on a follower joins and leaves through the owner's hooks: spectators on
    every node see the same presence DIFFs; a 4009 takeover across nodes is neither a
    leave nor a join."""
    async with cluster(redis_node.url, 2, *PRESENCE) as nodes, contextlib.AsyncExitStack() as s:
        room = "present"
        urls = [n.room_url(room) for n in nodes]
        await create_on(nodes[0], room)  # node 0 owns it
        spectators = []
        for url in urls:  # the first loads the room on node 0: node 0 owns it
            spectator = await s.enter_async_context(bare(url))
            await spectator.hello("spectator")
            await spectator.recv_type(3)
            spectators.append(spectator)

        async def all_see(diff: list[Any]) -> None:
            for spectator in spectators:
                assert await spectator.recv_type(5) == diff

        b = await s.enter_async_context(bare(urls[1]))
        await b.hello("agent", client="b")
        await all_see([5, 1, [[0, ["presence"], {"b": True}]]])
        older = await s.enter_async_context(bare(urls[0]))
        await older.hello("agent", client="a")
        await all_see([5, 2, [[0, ["presence", "a"], True]]])
        a = await s.enter_async_context(bare(urls[1]))
        welcome = await a.hello("agent", client="a")
        assert await older.closed() == 4009
        # b leaves after the grace: a leave of "a", had the takeover counted as one, was due
        # before it (its grace began earlier), so b's leave is the next DIFF only if none is.
        await b.ws.close()
        await all_see([5, 3, [[1, ["presence", "b"]]]])
        await a.send([4, welcome["acked"] + 1, "patch", [[0, ["k"], 1]]])
        await all_see([5, 4, [[0, ["k"], 1]]])
        await a.ws.close()
        await all_see([5, 5, [[1, ["presence", "a"]]]])
        assert "room taken over" not in nodes[1].output()  # node 0 owned it throughout


async def test_the_new_owner_keeps_presence(redis_node: RedisServer) -> None:
    """The owner stops: the new owner gives the agents the state lists as present the grace
    to reconnect; the one that stays connected on it is not left, the one gone leaves."""
    async with cluster(redis_node.url, 2, *PRESENCE) as nodes, contextlib.AsyncExitStack() as s:
        room = "moving"
        urls = [n.room_url(room) for n in nodes]
        gone = await s.enter_async_context(bare(urls[0]))  # node 0 loads it: node 0 owns it
        await gone.hello("agent", client="gone")
        assert await gone.recv_type(5) == [5, 1, [[0, ["presence"], {"gone": True}]]]
        spectator = await s.enter_async_context(bare(urls[1]))
        await spectator.hello("spectator")
        await spectator.recv_type(3)
        stays = await s.enter_async_context(bare(urls[1]))
        welcome = await stays.hello("agent", client="stays")
        assert await spectator.recv_type(5) == [5, 2, [[0, ["presence", "stays"], True]]]
        nodes[0].signal(signal.SIGTERM)
        assert await nodes[0].wait() == 0
        assert await gone.closed() == 1012
        assert await spectator.recv_type(5) == [5, 3, [[1, ["presence", "gone"]]]]
        # A probe joins and leaves: a leave of "stays", were it not counted as present, was
        # due before the probe's (its grace began at the takeover), so it would come first.
        probe = await s.enter_async_context(bare(urls[1]))
        await probe.hello("agent", client="probe")
        assert await spectator.recv_type(5) == [5, 4, [[0, ["presence", "probe"], True]]]
        await probe.ws.close()
        assert await spectator.recv_type(5) == [5, 5, [[1, ["presence", "probe"]]]]
        await stays.send([4, welcome["acked"] + 1, "patch", [[0, ["k"], 1]]])
        assert await spectator.recv_type(5) == [5, 6, [[0, ["k"], 1]]]
        _, body = await nodes[1].get(f"/rooms/{room}/state")
        assert body["state"]["presence"] == {"stays": True}


async def test_the_agents_of_a_node_that_died_leave(redis_node: RedisServer) -> None:
    """A follower is killed with its agent connected: the owner stops hearing its roster,
    and the agent leaves once the grace is over."""
    async with cluster(redis_node.url, 2, *PRESENCE) as nodes, contextlib.AsyncExitStack() as s:
        room = "orphans"
        urls = [n.room_url(room) for n in nodes]
        await create_on(nodes[0], room)  # node 0 owns it
        spectator = await s.enter_async_context(bare(urls[0]))  # node 0 owns the room
        await spectator.hello("spectator")
        await spectator.recv_type(3)
        agent = await s.enter_async_context(bare(urls[1]))
        await agent.hello("agent", client="x")
        assert await spectator.recv_type(5) == [5, 1, [[0, ["presence"], {"x": True}]]]
        nodes[1].signal(signal.SIGKILL)
        await nodes[1].wait()
        assert await spectator.recv_type(5) == [5, 2, [[1, ["presence", "x"]]]]


async def test_the_listing_counts_every_node(redis_node: RedisServer) -> None:
    """GET /rooms and GET /rooms/{room} on either node report the agents and spectators
    connected over both nodes."""
    async with cluster(redis_node.url, 2, *PRESENCE) as nodes, contextlib.AsyncExitStack() as s:
        room = "counted"
        urls = [n.room_url(room) for n in nodes]
        clients = []
        for url, role, client in (
            (urls[0], "agent", "a"),
            (urls[1], "agent", "b"),
            (urls[0], "spectator", None),
            (urls[1], "spectator", None),
            (urls[1], "spectator", None),
        ):
            ws = await s.enter_async_context(bare(url))
            await ws.hello(role, **({"client": client} if client else {}))
            clients.append(ws)

        async def counts(expected: tuple[list[str], int]) -> bool:
            for node in nodes:
                _, one = await node.get(f"/rooms/{room}")
                _, page = await node.get("/rooms")
                (row,) = [r for r in page["rooms"] if r["room"] == room]
                for body in (one, row):
                    if (body["agents"], body["spectators"]) != expected:
                        return False
            return True

        await eventually(lambda: counts((["a", "b"], 3)))
        await clients[4].ws.close()
        await clients[1].ws.close()  # b leaves once its grace is over
        await eventually(lambda: counts((["a"], 2)))


async def test_bench_spreads_agents_and_spectators_over_the_nodes(
    redis_node: RedisServer, tmp_path: Any
) -> None:
    """`statecast bench` against a cluster: agents and spectators connect to the listed
    nodes in turn, and every update reaches every spectator, whichever node it is on."""
    async with cluster(redis_node.url, 2, *FLAGS) as nodes:
        ws = ",".join(n.ws_url for n in nodes)
        out = tmp_path / "bench.json"
        bench = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "statecast.server", "bench",
            "--modes", "push", "--agents", "2", "--rate", "5",
            "--spectators", "4", "--sample", "2",
            "--duration", "1.5", "--warmup", "0.5",
            "--ws", ws, "--spectator-ws", ws,
            "--http", nodes[1].http_url, "--owner-http", nodes[0].http_url,
            "--json", str(out), "--no-live",
        )  # fmt: skip
        assert await asyncio.wait_for(bench.wait(), 120 * SCALE) == 0
        (summary,) = json.loads(out.read_text())["summaries"]
        assert "failed" not in summary and summary["errors"] == []
        updates = summary["updates"]
        assert updates["applied"] == updates["sent"] > 0 and updates["missed"] == 0
        for node in nodes:  # an agent and two spectators joined each node
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{node.http_url}/metrics") as response,
            ):
                text = await response.text()
            joins = sum(
                float(line.split()[-1])
                for line in text.splitlines()
                if line.startswith("statecast_syncs_total")
            )
            assert joins >= 3, (node.name, text)

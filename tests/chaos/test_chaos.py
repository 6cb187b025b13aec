"""Exactly once under any fault schedule: a randomized fault test over a real cluster.

Three ``statecast serve`` nodes on one real Redis (Valkey, AOF on), each reaching it
through a proxy the nemesis can cut; lease TTL 1 s. On every node: agents that keep
up to 20 actions in flight (raw protocol clients, :class:`tests.cluster_client.Roamer`),
agents using the shipped Python client with the cluster's URLs (pipelining too), an
HTTP actor with its own aids, and spectators, some of whose connections are cut
mid-stream. The nemesis (tests/chaos/nemesis.py) injects a seeded schedule of faults
meanwhile; then everything is healed, the load stops, every client converges, and the
history checker (tests/chaos/history.py) reads what every client saw against the final
state on every node.

CI runs ``CHAOS_SEEDS`` schedules (2 by default) of ``CHAOS_STEPS`` steps (5);
``make chaos SEEDS=N`` runs more, and ``CHAOS_SEED=S`` replays one schedule. A failure
prints its seed, its schedule and every broken promise.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import shutil
import sys
from typing import Any

import aiohttp
import pytest

from statecast.protocol.client import RoomClient
from statecast.protocol.digest import state_digest
from statecast.protocol.errors import Rejection, StatecastError
from tests.chaos.history import ActorLog, Observed, check, unavailability
from tests.chaos.nemesis import LinkProxy, Nemesis, schedule
from tests.cluster_client import Roamer
from tests.cluster_nodes import Node
from tests.helpers import SCALE
from tests.redis_server import RedisServer
from tests.server.test_cluster import FLAGS as CLUSTER_FLAGS

ROOM = "chaos"
# The cluster tests' flags (TTL 1 s, a rate limit no actor reaches), and no leave grace.
FLAGS = (*CLUSTER_FLAGS, "--leave-grace", "0")
IN_FLIGHT = 20


def _seeds() -> list[int]:
    fixed = os.environ.get("CHAOS_SEED", "")
    if fixed:
        return [int(s) for s in fixed.split(",")]
    return list(range(1, int(os.environ.get("CHAOS_SEEDS", "2")) + 1))


STEPS = int(os.environ.get("CHAOS_STEPS", "5"))


def append(client: str, n: int) -> list[Any]:
    return [[2, ["list", -1], f"{client}-{n}"]]


class RawAgent:
    """A raw protocol agent pipelining up to IN_FLIGHT actions; the sync machine re-sends
    the unanswered ones after each reconnect, with their aids."""

    def __init__(self, urls: list[str], client: str, rate: float) -> None:
        self.roamer = Roamer(urls, client=client)
        self.log = ActorLog(client)
        self.rate = rate
        self._n_of: dict[int, int] = {}

    async def run(self, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            self._collect()
            if len(self.roamer.sync.pending) < IN_FLIGHT:
                n += 1
                aid = self.roamer.send("patch", append(self.log.client, n))
                self._n_of[aid] = n
                self.log.sent(n)
            await asyncio.sleep(1 / self.rate)

    def _collect(self) -> None:
        for aid, outcome in list(self.roamer.outcomes.items()):
            n = self._n_of.pop(aid, None)
            if n is not None:
                self.log.answered(n, outcome, self.roamer.answered_at.get(aid))

    @property
    def settled(self) -> bool:
        self._collect()
        return not self.roamer.sync.pending


class ShippedAgent:
    """The shipped client (protocol/client.py) with every node's URL, pipelining act()s."""

    def __init__(self, urls: list[str], client: str, rate: float) -> None:
        self.room = RoomClient(urls, client=client, backoff_base=0.05, backoff_max=0.5)
        self.log = ActorLog(client)
        self.rate = rate
        self._tasks: set[asyncio.Task[None]] = set()

    async def _act(self, n: int) -> None:
        try:
            seq = await self.room.act("patch", append(self.log.client, n))
        except Rejection as exc:
            self.log.answered(n, ("error", exc.code))
        except StatecastError:
            return  # the client ended: unanswered
        else:
            self.log.answered(n, ("ack", seq), asyncio.get_running_loop().time())

    async def run(self, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            if len(self._tasks) < IN_FLIGHT // 2:
                n += 1
                self.log.sent(n)
                task = asyncio.create_task(self._act(n))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            await asyncio.sleep(1 / self.rate)

    @property
    def settled(self) -> bool:
        return not self._tasks


class HttpActor:
    """POSTs its actions one at a time; an answer that says nothing certain (503, 504, a
    dropped connection) is followed by the same aid again, on the next node."""

    def __init__(self, nodes: list[Node], client: str, rate: float) -> None:
        self.nodes = nodes
        self.log = ActorLog(client)
        self.rate = rate
        self.busy = False

    async def run(self, stop: asyncio.Event) -> None:
        timeout = aiohttp.ClientTimeout(total=5 * SCALE)
        node = 0
        async with aiohttp.ClientSession(timeout=timeout) as session:
            n = 0
            while not stop.is_set():
                n += 1
                self.log.sent(n)
                self.busy = True
                body = {"client": self.log.client, "aid": n, "name": "patch"}
                body["args"] = append(self.log.client, n)
                while True:
                    url = f"{self.nodes[node % len(self.nodes)].http_url}/rooms/{ROOM}/actions"
                    try:
                        async with session.post(url, json=body) as response:
                            answer = await response.json(content_type=None)
                            status = response.status
                    except (aiohttp.ClientError, TimeoutError, ValueError):
                        status, answer = 0, None
                    if status == 200:
                        at = asyncio.get_running_loop().time()
                        self.log.answered(n, ("ack", answer["seq"]), at)
                        break
                    if 400 <= status < 500 and status != 429:
                        self.log.answered(n, ("error", answer.get("code")))
                        break
                    node += 1  # unknown or not processed: the same aid again, elsewhere
                    await asyncio.sleep(0.1)
                self.busy = False
                await asyncio.sleep(1 / self.rate)

    @property
    def settled(self) -> bool:
        return not self.busy


def key_events(node: Node) -> str:
    """The node's log lines about ownership, epochs and faults (its whole log is long)."""
    words = ("lease", "written back", "taken over", "refused", "epoch", "lost", "started", "room")
    node.log.flush()
    with open(node.log.name, encoding="utf-8", errors="replace") as f:
        lines = [line.rstrip() for line in f if any(w in line for w in words)]
    return "\n".join(lines[-80:])


async def eventually(check: Any, timeout: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout * SCALE
    while asyncio.get_running_loop().time() < deadline:
        if check():
            return True
        await asyncio.sleep(0.05)
    return False


async def heads(nodes: list[Node]) -> list[dict[str, Any]] | None:
    out = []
    for node in nodes:
        try:
            status, body = await node.get(f"/rooms/{ROOM}/head")
        except (aiohttp.ClientError, TimeoutError):
            return None
        if status != 200:
            return None
        out.append(body)
    return out


async def converge(nodes: list[Node], roamers: list[Roamer], shipped: list[RoomClient]) -> str:
    """Wait until every node and every client holds one head; '' or what did not converge."""
    last = "no head"
    deadline = asyncio.get_running_loop().time() + 40 * SCALE
    while asyncio.get_running_loop().time() < deadline:
        hs = await heads(nodes)
        if hs is not None:
            first = hs[0]
            key = (first["epoch"], first["seq"], first["digest"])
            behind = [
                f"{h['epoch']}:{h['seq']}" for h in hs if (h["epoch"], h["seq"], h["digest"]) != key
            ]
            behind += [
                f"{r.sync.client or 'spectator'}@{r.sync.epoch}:{r.seq}"
                for r in roamers
                if (r.sync.epoch, r.seq) != (first["epoch"], first["seq"])
            ]
            behind += [
                f"{c.client_id}@{c.epoch}:{c.seq}"
                for c in shipped
                if (c.epoch, c.seq) != (first["epoch"], first["seq"])
            ]
            if not behind:
                wrong = [r.sync.client or "spectator" for r in roamers if r.digest() != key[2]]
                wrong += [str(c.client_id) for c in shipped if state_digest(c.state) != key[2]]
                return f"digests differ from /head: {wrong}" if wrong else ""
            last = f"head {key[:2]}, behind: {behind[:8]}"
        await asyncio.sleep(0.1)
    return f"did not converge: {last}"


@pytest.mark.parametrize("seed", _seeds())
async def test_exactly_once_under_a_random_fault_schedule(seed: int, tmp_path: Any) -> None:
    steps = schedule(seed, STEPS)
    rng = random.Random(seed)
    redis_server = RedisServer(aof=True)
    redis_server.start()
    links = [LinkProxy(redis_server.port) for _ in range(3)]
    nodes: list[Node] = []
    actors: list[RawAgent | ShippedAgent | HttpActor] = []
    spectators: list[Roamer] = []
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    nemesis: Nemesis | None = None
    try:
        for link in links:
            await link.start()
        nodes = [Node(link.url, f"n{i}", *FLAGS) for i, link in enumerate(links)]
        for node in nodes:  # n0 first: it owns the room
            await node.start()
        urls = [n.room_url(ROOM) for n in nodes]
        status, _ = await nodes[0].post(
            f"/rooms/{ROOM}/actions",
            {"client": "setup", "aid": 1, "name": "patch", "args": [[0, ["list"], []]]},
        )
        assert status == 200

        def rotated(i: int) -> list[str]:
            return urls[i % 3 :] + urls[: i % 3]

        raw = [RawAgent(rotated(i), f"raw{i}", rate=25) for i in range(3)]
        shipped = [ShippedAgent(rotated(i + 1), f"lib{i}", rate=12) for i in range(2)]
        http = [HttpActor(nodes[2:] + nodes[:2], "http0", rate=8)]
        actors = [*raw, *shipped, *http]
        spectators = [Roamer(rotated(i), role="spectator") for i in range(4)]
        for agent in raw:
            await agent.roamer.start()
        for agent in shipped:
            await agent.room.start()
        for s in spectators:
            await s.start()
        roamers = [a.roamer for a in raw] + spectators

        def cut_clients(pick: int) -> None:
            for r in random.Random(pick).sample(roamers, 3):
                r.drop()
            if pick % 2:
                for a in shipped:
                    asyncio.get_running_loop().create_task(a.room.drop_connection())

        nemesis = Nemesis(redis_server, nodes, links, ROOM, cut_clients)
        tasks = [asyncio.create_task(a.run(stop)) for a in actors]
        await asyncio.sleep(1.0 + rng.random())
        await nemesis.run(steps)
        await asyncio.sleep(1.0)  # everything healed: load goes on for a moment
        stop.set()
        await asyncio.gather(*tasks)
        problems: list[str] = []
        if not await eventually(lambda: all(a.settled for a in actors), 60):
            problems.append("actions still unanswered 60 s after the faults stopped")
        verdict = await converge(nodes, roamers, [a.room for a in shipped])
        if verdict:
            problems.append(verdict)
        _, body = await nodes[0].get(f"/rooms/{ROOM}/state")
        final = body["state"].get("list")
        if final is None:
            problems.append(f"the room lost its state: {body['state']!r:.200}")
            final = []
        observed = [
            Observed(r.sync.client or f"spectator{i}", r.diffs, r.duplicates, r.gaps)
            for i, r in enumerate(roamers)
        ]
        found, tally = check([a.log for a in actors], observed, final)
        problems += found
        gaps = unavailability([a.log for a in actors], nemesis.windows)
        if os.environ.get("CHAOS_VERBOSE"):
            t0 = nemesis.windows[0][1] if nemesis.windows else 0.0
            for faults, start, end in nemesis.windows:
                print(f"step {faults} {start - t0:.2f}..{end - t0:.2f}", file=sys.stderr)
            for a in actors:
                times = sorted(a.log.acked_at)
                long = [
                    f"{x - t0:.2f}+{y - x:.2f}" for x, y in itertools.pairwise(times) if y - x > 1
                ]
                print(a.log.client, long, file=sys.stderr)
        summary = (
            f"seed {seed}: faults {nemesis.injected}; acked {tally.acked} "
            f"({tally.acked_none} as 'already processed'), refused {tally.refused}, "
            f"unanswered {tally.unanswered}, applied {tally.applied}; longest time an "
            f"actor went without an ACK, by fault: "
            + ", ".join(f"{kind} {seconds:.2f} s" for kind, seconds in sorted(gaps.items()))
        )
        print(summary, file=sys.stderr)
        assert not problems, (
            f"chaos seed {seed} (replay: CHAOS_SEED={seed} CHAOS_STEPS={STEPS} make chaos)\n"
            f"schedule: {nemesis.log}\n{summary}\n" + "\n".join(problems[:40])
        )
    except BaseException:
        if nemesis is not None:
            sys.stderr.write(f"chaos seed {seed}: schedule {nemesis.log}\n")
        for node in nodes:
            sys.stderr.write(f"--- {node.name}: {key_events(node)}\n")
            node.log.flush()
            shutil.copy(node.log.name, tmp_path / f"{node.name}.log")
        sys.stderr.write(f"chaos seed {seed}: the nodes' whole logs are in {tmp_path}\n")
        raise
    finally:
        if os.environ.get("CHAOS_VERBOSE"):
            for node in nodes:
                node.log.flush()
                shutil.copy(node.log.name, tmp_path / f"{node.name}.log")
            sys.stderr.write(f"chaos seed {seed}: the nodes' whole logs are in {tmp_path}\n")
        stop.set()
        for task in tasks:
            task.cancel()
        for agent in actors:
            with contextlib.suppress(Exception):
                if isinstance(agent, RawAgent):
                    await agent.roamer.close()
                elif isinstance(agent, ShippedAgent):
                    await agent.room.close()
        for s in spectators:
            with contextlib.suppress(Exception):
                await s.close()
        await asyncio.gather(*(node.stop() for node in nodes), return_exceptions=True)
        for node in nodes:
            node.close()
        for link in links:
            await link.stop()
        redis_server.close()

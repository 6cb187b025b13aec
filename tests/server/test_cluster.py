"""The cluster: real ``statecast serve`` processes on one real Redis (tests/cluster_nodes.py).

Each test asserts what clients see: every client's digest equals ``/head``'s on
every node, no seq gap while live, every acknowledged action applied exactly
once (the counter a client's actions increment equals its acknowledged aids).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.cluster_client import Roamer
from tests.cluster_nodes import Node, cluster
from tests.helpers import SCALE
from tests.redis_server import RedisServer

TTL = "1.0"
FLAGS = ("--lease-ttl", TTL, "--log-level", "info")


@pytest.fixture
async def redis_node() -> AsyncIterator[RedisServer]:
    """A Redis of this test's own (the fault tests stop and restart it)."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


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
        for c in agents + spectators:
            assert c.gaps == [] and c.closes == []
            assert c.sync.state == {"by": {f"a{i}": 15 for i in range(6)}}
        for c in agents + spectators:
            await c.close()

"""Agents and spectators behind a fault-injecting proxy still converge, exactly once.

Every client uses the project's own client (:class:`statecast.protocol.client.RoomClient`),
which reconnects with backoff, resumes by ``(epoch, seq)`` and re-sends its
un-acked actions with their original aids. The proxy cuts connections at
random byte offsets, delays chunks and stalls reads; the run is bounded by a
fixed number of actions per agent and an overall timeout.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from statecast.protocol.client import RoomClient
from statecast.protocol.digest import state_digest
from statecast.protocol.sync import Changed, StateReplaced
from tests.faultproxy import FaultPlan, FaultProxy
from tests.helpers import TIMEOUT, RunningServer, http_session, running_server

AGENTS = 6
SPECTATORS = 4
ACTIONS_PER_AGENT = 40
ROOM = "faults"


@dataclass
class Observed:
    """What one client saw: the seq it started from and every Changed/StateReplaced after."""

    base: int = 0
    events: list[tuple[str, int]] = field(default_factory=list)


async def record(room: RoomClient, out: Observed) -> None:
    """Record seqs of state events; nothing awaits between reading the base and subscribing."""
    out.base = room.seq
    async for event in room.changes():
        if isinstance(event, Changed):
            out.events.append(("diff", event.seq))
        elif isinstance(event, StateReplaced):
            out.events.append(("snapshot", event.seq))


def seq_gaps(observed: Observed) -> list[str]:
    """Every place where a Changed did not follow the previous seq (or a StateReplaced)."""
    problems = []
    previous = observed.base
    for kind, seq in observed.events:
        if kind == "diff" and seq != previous + 1:
            problems.append(f"diff {seq} after {previous}")
        previous = seq
    return problems


async def run_agent(room: RoomClient, name: str, results: dict[str, int | None]) -> None:
    for k in range(ACTIONS_PER_AGENT):
        token = f"{name}-{k}"
        results[token] = await room.act("patch", [[2, ["log", -1], token]])


def ws_port(server: RunningServer) -> int:
    return int(server.ws_url.rsplit(":", 1)[1])


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_clients_converge_exactly_once_through_faults(store: str, tmp_path: Path) -> None:
    """Through cuts, delays and stalls all clients converge gap-free; each action counts once."""
    plan = FaultPlan(cut_probability=0.9, cut_after=(40, 2_500))
    async with (
        running_server(
            store="memory" if store == "memory" else f"sqlite:{tmp_path / 'faults.db'}",
            action_rate=1e9,
            action_burst=1_000_000_000,
        ) as server,
        FaultProxy(ws_port(server), seed=1729, plan=plan) as proxy,
        http_session() as http,
    ):
        setup = {"client": "setup", "aid": 1, "name": "patch", "args": [[0, ["log"], []]]}
        async with http.post(f"{server.http_url}/rooms/{ROOM}/actions", json=setup) as r:
            assert r.status == 200, await r.text()
        clients: list[tuple[str, RoomClient]] = []
        for i in range(AGENTS):
            name = f"agent{i}"
            clients.append(
                (name, RoomClient(proxy.url(ROOM), role="agent", client=name, backoff_max=0.3))
            )
        for i in range(SPECTATORS):
            clients.append(
                (
                    f"spectator{i}",
                    RoomClient(proxy.url(ROOM), role="spectator", backoff_max=0.3),
                )
            )
        observed = {name: Observed() for name, _ in clients}
        recorders: list[asyncio.Task[None]] = []
        results: dict[str, int | None] = {}
        try:
            async with asyncio.timeout(TIMEOUT * 12):
                await asyncio.gather(*(room.start() for _, room in clients))
                for name, room in clients:
                    recorders.append(asyncio.create_task(record(room, observed[name])))
                await asyncio.sleep(0)  # every recorder subscribes before the first action
                await asyncio.gather(
                    *(
                        run_agent(room, name, results)
                        for name, room in clients
                        if name.startswith("agent")
                    )
                )
                proxy.calm()
                async with http.get(f"{server.http_url}/rooms/{ROOM}/head") as r:
                    head: dict[str, Any] = await r.json()
                await asyncio.gather(*(room.wait_for_seq(head["seq"]) for _, room in clients))

            for name, room in clients:
                assert room.epoch == head["epoch"], name
                assert room.seq == head["seq"], name
                assert state_digest(room.state) == head["digest"], name
                assert seq_gaps(observed[name]) == [], name

            final = clients[0][1].state["log"]
            counts = Counter(final)
            assert len(results) == AGENTS * ACTIONS_PER_AGENT
            assert {t for t, n in counts.items() if n != 1} == set()
            assert set(counts) == set(results)
            # One diff per applied action (plus the setup patch): nothing applied twice.
            assert head["seq"] == 1 + AGENTS * ACTIONS_PER_AGENT
            # The run did meet faults, and clients did come back from them.
            assert proxy.counts.cuts > 0
            assert sum(room.connections for _, room in clients) > len(clients)
        finally:
            for task in recorders:
                task.cancel()
            await asyncio.gather(*recorders, return_exceptions=True)
            await asyncio.gather(*(room.close() for _, room in clients))

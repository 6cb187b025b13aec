"""Property test against a live server: agents act and drop their connections at random points.

Three agents and a spectator use the project's own client (statecast.protocol.client.connect).
Hypothesis chooses rounds of concurrent moves: an agent acts (each action appends a
unique token to the list at ``["log"]``), or a client's connection is cut and it
reconnects and resumes by itself. At the end:

* every client's state and seq equal the server's (``GET /state``);
* on every connection, the DIFFs the server sent ran in seq order with no gap and
  no duplicate, from the resume point (or the SNAPSHOT) on — checked on the raw
  frames, before the client's own duplicate and gap handling can hide anything;
* every action took effect exactly once: each token appears once in the log, and
  the log holds nothing else.

A second property drives the built-in document room with random patches aimed at
its state and checks every verdict (ACK or ERROR ``invalid``) and the final state
against the independent reference model of tests/protocol/strategies.py.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import dataclass, field
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statecast.protocol.client import RoomClient, connect
from statecast.protocol.errors import Rejection
from tests.helpers import TIMEOUT, http_session, running_server
from tests.protocol.strategies import RefError, op_for, ref_apply, ref_apply_all, same

AGENTS = 3
ROOM = "props"

Move = tuple[str, int]
moves = st.one_of(
    st.tuples(st.just("act"), st.integers(0, AGENTS - 1)),
    st.tuples(st.just("drop"), st.integers(0, AGENTS)),  # index AGENTS is the spectator
)
rounds = st.lists(st.lists(moves, min_size=1, max_size=6), min_size=1, max_size=8)


@dataclass
class FrameChecker:
    """Checks the raw DIFF stream of each connection of one client for gaps and duplicates."""

    name: str
    problems: list[str] = field(default_factory=list)
    connections: int = 0
    diffs: int = 0
    expect: int | None = None

    def feed(self, data: bytes, client_seq: int) -> None:
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        unpacker.feed(data)
        for message in unpacker:
            kind = message[0]
            if kind == 2:
                self.connections += 1
                sync = message[1]["sync"]
                # replay/current continue from the resume point, which is the client's seq.
                self.expect = None if sync == "snapshot" else client_seq + 1
            elif kind == 3:
                self.expect = message[2] + 1
            elif kind == 5:
                self.diffs += 1
                if self.expect is None:
                    self.problems.append(f"{self.name}: DIFF {message[1]} before any state")
                elif message[1] != self.expect:
                    self.problems.append(f"{self.name}: DIFF {message[1]}, expected {self.expect}")
                    self.expect = message[1] + 1
                else:
                    self.expect += 1


def tap(room: RoomClient, checker: FrameChecker) -> None:
    """Observe every frame the client receives (the client still processes it unchanged)."""
    receive = room.sync.receive_frame
    checker.expect = room.sync.seq + 1  # connect() returned holding the first state

    def observed(data: bytes) -> None:
        checker.feed(data, room.sync.seq)
        receive(data)

    room.sync.receive_frame = observed  # type: ignore[method-assign]


async def scenario(plan: list[list[Move]], **config: Any) -> None:
    async with running_server(action_rate=0, **config) as server, http_session() as http:
        url = server.room_url(ROOM)
        async with (
            connect(url, client="agent-0") as a0,
            connect(url, client="agent-1") as a1,
            connect(url, client="agent-2") as a2,
            connect(url, role="spectator") as spectator,
        ):
            agents = [a0, a1, a2]
            clients: list[RoomClient] = [*agents, spectator]
            checkers = [FrameChecker(f"client {i}") for i in range(len(clients))]
            for room, checker in zip(clients, checkers, strict=True):
                tap(room, checker)
            assert await a0.act("patch", [[0, ["log"], []]]) == 1
            tokens: list[str] = []
            count = collections.Counter[int]()

            async def act(i: int) -> None:
                count[i] += 1
                token = f"a{i}-{count[i]}"
                tokens.append(token)
                seq = await agents[i].act("patch", [[2, ["log", -1], token]])
                assert seq is None or seq >= 2

            async def drop(i: int) -> None:
                await clients[i].drop_connection()

            for moves_ in plan:
                await asyncio.gather(*(act(i) if kind == "act" else drop(i) for kind, i in moves_))
            async with http.get(f"{server.http_url}/rooms/{ROOM}/state") as r:
                body: dict[str, Any] = await r.json()
            for room in clients:
                await asyncio.wait_for(room.wait_for_seq(body["seq"]), TIMEOUT)
                assert room.epoch == body["epoch"]
                assert room.seq == body["seq"]
                assert room.state == body["state"]
            problems = [p for c in checkers for p in c.problems]
            assert not problems, problems
            log = body["state"]["log"]
            occurrences = collections.Counter(log)
            assert all(occurrences[t] == 1 for t in tokens), occurrences
            assert len(log) == len(tokens)
            # Every applied action made one diff: the head is the setup plus one per token.
            assert body["seq"] == 1 + len(tokens)


SETTINGS = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@SETTINGS
@given(rounds)
def test_random_actions_and_drops_converge_exactly_once(plan: list[list[Move]]) -> None:
    """Under random actions and reconnects, all clients match the server, gap-free, exactly once."""
    asyncio.run(asyncio.wait_for(scenario(plan), TIMEOUT * 6))


@SETTINGS
@given(rounds)
def test_converges_when_resumes_need_snapshots(plan: list[list[Move]]) -> None:
    """With only 2 diffs held, resumes fall back to SNAPSHOT; the same guarantees hold."""
    asyncio.run(asyncio.wait_for(scenario(plan, history_diffs=2), TIMEOUT * 6))


async def patch_scenario(patches: list[list[list[Any]]]) -> None:
    """Send each patch; the server's verdicts and state must match the reference model."""
    async with running_server(action_rate=0) as server:
        url = server.room_url("model")
        async with connect(url, client="modeller") as agent:
            model: dict[str, Any] = {}
            head = 0
            for ops in patches:
                try:
                    expected: dict[str, Any] | None = ref_apply_all(model, ops)
                except RefError:
                    expected = None
                try:
                    seq = await agent.act("patch", ops)
                except Rejection as exc:
                    assert expected is None, (ops, exc)
                    assert exc.code == "invalid"
                    continue
                assert expected is not None, ops
                model = expected
                head = head + 1 if ops else head
                assert seq == head
            await asyncio.wait_for(agent.wait_for_seq(head), TIMEOUT)
            assert same(agent.state, model)
            async with connect(url, role="spectator") as fresh:
                assert fresh.seq == head
                assert same(fresh.state, model)


@st.composite
def patch_lists(draw: st.DrawFn) -> list[list[list[Any]]]:
    """Patches of 0-3 ops, each aimed at the model state the earlier patches lead to."""
    model: dict[str, Any] = {}
    patches = []
    for _ in range(draw(st.integers(1, 12))):
        ops = []
        current = model
        for _ in range(draw(st.integers(0, 3))):
            op = draw(op_for(current))
            ops.append(op)
            with contextlib.suppress(RefError):
                current = ref_apply(current, op)
        patches.append(ops)
        with contextlib.suppress(RefError):
            model = ref_apply_all(model, ops)
    return patches


@SETTINGS
@given(patch_lists())
def test_document_room_matches_the_reference_model(patches: list[list[list[Any]]]) -> None:
    """The live document room applies or rejects each patch as the reference model does."""
    asyncio.run(asyncio.wait_for(patch_scenario(patches), TIMEOUT * 6))

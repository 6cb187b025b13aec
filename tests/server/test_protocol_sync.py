"""Conformance: docs/protocol.md §6, sync (snapshot, replay, current) on resume and RESYNC."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest

from tests.helpers import TIMEOUT, BareClient, RunningServer, bare, http_session, running_server
from tests.server.test_protocol_messages import get_json, joined


def packed_len(value: Any) -> int:
    return len(msgpack.packb(value, use_bin_type=True))


class Writer:
    """Applies patches over HTTP and keeps its own copy of every diff, to size replays."""

    def __init__(self, server: RunningServer, room: str) -> None:
        self.server = server
        self.room = room
        self.aid = 0
        self.diffs: dict[int, list[Any]] = {}

    async def patch(self, *ops: list[Any]) -> int:
        self.aid += 1
        body = {"client": "writer", "aid": self.aid, "name": "patch", "args": list(ops)}
        async with (
            http_session() as http,
            http.post(f"{self.server.http_url}/rooms/{self.room}/actions", json=body) as r,
        ):
            assert r.status == 200, await r.text()
            seq = (await r.json())["seq"]
        self.diffs[seq] = list(ops)
        return int(seq)

    def replay_bytes(self, since: int, head: int) -> int:
        return sum(packed_len([5, s, self.diffs[s]]) for s in range(since + 1, head + 1))


async def room_state(server: RunningServer, room: str) -> dict[str, Any]:
    async with http_session() as http:
        body: dict[str, Any] = await get_json(http, f"{server.http_url}/rooms/{room}/state")
        return body


@contextlib.asynccontextmanager
async def resumed(
    server: RunningServer, room: str, resume: list[Any] | None, role: str = "spectator"
) -> AsyncIterator[tuple[BareClient, dict[str, Any]]]:
    """A bare client whose HELLO carries ``resume``; yields it just after WELCOME."""
    async with bare(server.room_url(room)) as client:
        fields: dict[str, Any] = {} if resume is None else {"resume": resume}
        welcome = await client.hello(role, **fields)
        yield client, welcome


async def expect_live_next(client: BareClient, writer: Writer, seq: int) -> None:
    """Nothing else is queued: the next message is the live DIFF of a fresh action."""
    head = await writer.patch([0, ["live"], seq])
    assert head == seq
    assert await client.recv() == [5, seq, [[0, ["live"], seq]]]


# --- HELLO ------------------------------------------------------------------------------------


async def test_hello_without_resume_always_gets_snapshot(server: RunningServer) -> None:
    """§6.1: A HELLO without resume gets sync=snapshot and a SNAPSHOT at the head."""
    w = Writer(server, "s-fresh")
    await w.patch([0, ["a"], 1])
    async with resumed(server, "s-fresh", None) as (c, welcome):
        assert welcome["sync"] == "snapshot" and welcome["seq"] == 1
        assert await c.recv() == [3, welcome["epoch"], 1, {"a": 1}]
        await expect_live_next(c, w, 2)


async def test_resume_at_head_is_current(server: RunningServer) -> None:
    """§6.2, §6.3: resume naming the head gets sync=current, no SNAPSHOT, then live DIFFs."""
    w = Writer(server, "s-current")
    await w.patch([0, ["a"], 1])
    epoch = (await room_state(server, "s-current"))["epoch"]
    async with resumed(server, "s-current", [epoch, 1]) as (c, welcome):
        assert welcome["sync"] == "current" and welcome["seq"] == 1
        await expect_live_next(c, w, 2)


async def test_resume_behind_with_small_diffs_is_replay(server: RunningServer) -> None:
    """§6.2, §6.3: resume behind the head, diffs held and smaller than the snapshot: replay,
    then live.
    """
    w = Writer(server, "s-replay")
    await w.patch([0, ["big"], "x" * 5000])
    for i in range(2, 6):
        await w.patch([0, ["n"], i])
    epoch = (await room_state(server, "s-replay"))["epoch"]
    async with resumed(server, "s-replay", [epoch, 2]) as (c, welcome):
        assert welcome["sync"] == "replay" and welcome["seq"] == 5
        for seq in (3, 4, 5):
            assert await c.recv() == [5, seq, [[0, ["n"], seq]]]
        await expect_live_next(c, w, 6)


@pytest.mark.parametrize(("big", "small_diffs"), [(200, 1), (200, 8), (50, 3), (2000, 30)])
async def test_replay_only_when_its_bytes_are_below_the_snapshot(
    server: RunningServer, big: int, small_diffs: int
) -> None:
    """§6.2: The server picks replay exactly when the replayed DIFFs' bytes are below the
    SNAPSHOT's.
    """
    room = f"s-size-{big}-{small_diffs}"
    w = Writer(server, room)
    await w.patch([0, ["big"], "x" * big])
    for i in range(small_diffs):
        await w.patch([0, ["s"], "y" * 20 + str(i)])
    body = await room_state(server, room)
    head = body["seq"]
    snapshot_bytes = packed_len([3, body["epoch"], head, body["state"]])
    replay_bytes = w.replay_bytes(1, head)
    expected = "replay" if replay_bytes < snapshot_bytes else "snapshot"
    async with resumed(server, room, [body["epoch"], 1]) as (c, welcome):
        assert welcome["sync"] == expected, (replay_bytes, snapshot_bytes)
        if expected == "snapshot":
            assert await c.recv() == [3, body["epoch"], head, body["state"]]
        else:
            for seq in range(2, head + 1):
                assert await c.recv() == [5, seq, w.diffs[seq]]
        await expect_live_next(c, w, head + 1)


async def test_replay_and_snapshot_both_seen_across_the_size_boundary(
    server: RunningServer,
) -> None:
    """§6.2: One room, one resume point: replay while diffs are small, snapshot once they
    outweigh it.
    """
    w = Writer(server, "s-boundary")
    await w.patch([0, ["big"], "x" * 300])
    epoch = (await room_state(server, "s-boundary"))["epoch"]
    seen = set()
    for i in range(20):
        await w.patch([0, ["k"], "z" * 30 + str(i)])
        async with resumed(server, "s-boundary", [epoch, 1]) as (_, welcome):
            seen.add(welcome["sync"])
    assert seen == {"replay", "snapshot"}


async def test_stale_epoch_gets_snapshot(server: RunningServer) -> None:
    """§6.2: A resume with an epoch that is not the room's current one gets a SNAPSHOT."""
    w = Writer(server, "s-stale")
    await w.patch([0, ["a"], 1])
    async with resumed(server, "s-stale", ["not-the-epoch", 1]) as (c, welcome):
        assert welcome["sync"] == "snapshot" and welcome["epoch"] != "not-the-epoch"
        assert await c.recv() == [3, welcome["epoch"], 1, {"a": 1}]


async def test_seq_above_head_gets_snapshot(server: RunningServer) -> None:
    """§6.2: A resume naming a seq above the head gets a SNAPSHOT at the head."""
    w = Writer(server, "s-above")
    await w.patch([0, ["a"], 1])
    epoch = (await room_state(server, "s-above"))["epoch"]
    async with resumed(server, "s-above", [epoch, 7]) as (c, welcome):
        assert welcome["sync"] == "snapshot" and welcome["seq"] == 1
        assert await c.recv() == [3, epoch, 1, {"a": 1}]


async def test_trimmed_diffs_get_snapshot_and_held_ones_replay() -> None:
    """§6.2, §6.8, §10.2: With history_diffs=3, resuming before a trimmed diff gets SNAPSHOT; just
    inside, replay.
    """
    async with running_server(history_diffs=3) as server:
        w = Writer(server, "s-trim")
        await w.patch([0, ["big"], "x" * 2000])
        for i in range(2, 8):
            await w.patch([0, ["n"], i])
        epoch = (await room_state(server, "s-trim"))["epoch"]
        async with http_session() as http:
            head = await get_json(http, f"{server.http_url}/rooms/s-trim/head")
        assert head["seq"] == 7 and head["oldest"] == 4
        async with resumed(server, "s-trim", [epoch, 3]) as (c, welcome):
            assert welcome["sync"] == "snapshot"
            assert (await c.recv())[:3] == [3, epoch, 7]
        async with resumed(server, "s-trim", [epoch, 4]) as (c, welcome):
            assert welcome["sync"] == "replay"
            assert [(await c.recv())[1] for _ in range(3)] == [5, 6, 7]
            await expect_live_next(c, w, 8)


async def test_agent_resume_reports_acked(server: RunningServer) -> None:
    """§5.3, §6.7: An agent's resuming WELCOME carries acked = its last processed aid, whatever
    the sync.
    """
    async with joined(server, "s-acked", client="ag") as (c, welcome):
        await c.send([4, 3, "patch", [[0, ["a"], 1]]])
        await c.recv_type(7)
    async with resumed(server, "s-acked", [welcome["epoch"], 1], "agent") as (_, again):
        assert again["acked"] == 0  # no client id given: a new, assigned one
    async with bare(server.room_url("s-acked")) as c:
        again = await c.hello("agent", client="ag", resume=[welcome["epoch"], 0])
        assert again["acked"] == 3 and again["sync"] in ("replay", "snapshot")


async def test_empty_client_id_gets_its_acked(server: RunningServer) -> None:
    """§5.2, §6.7: An agent whose client id is the empty string is told its acked like any other."""
    async with joined(server, "s-acked-empty", client="") as (c, _):
        await c.send([4, 1, "patch", [[0, ["a"], 1]]])
        assert await c.recv_type(7) == [7, 1, 1]
    async with bare(server.room_url("s-acked-empty")) as c:
        again = await c.hello("agent", client="")
        assert again["client"] == "" and again["acked"] == 1


# --- RESYNC -----------------------------------------------------------------------------------


async def test_resync_current_replay_and_snapshot(server: RunningServer) -> None:
    """§5.7, §6.2: RESYNC follows the same rules: current sends nothing, replay DIFFs, else a
    SNAPSHOT.
    """
    w = Writer(server, "s-resync")
    await w.patch([0, ["big"], "x" * 3000])
    async with joined(server, "s-resync", "spectator") as (c, welcome):
        epoch = welcome["epoch"]
        for i in (2, 3, 4):
            await w.patch([0, ["n"], i])
            assert (await c.recv())[1] == i
        # current: nothing is sent in answer.
        await c.send([6, epoch, 4])
        await expect_live_next(c, w, 5)
        # replay: the DIFFs after the named seq.
        await c.send([6, epoch, 2])
        assert [await c.recv() for _ in range(3)] == [
            [5, 3, [[0, ["n"], 3]]],
            [5, 4, [[0, ["n"], 4]]],
            [5, 5, [[0, ["live"], 5]]],
        ]
        # a stale epoch, a seq above the head: SNAPSHOT at the head.
        state = (await room_state(server, "s-resync"))["state"]
        await c.send([6, "other-epoch", 2])
        assert await c.recv() == [3, epoch, 5, state]
        await c.send([6, epoch, 99])
        assert await c.recv() == [3, epoch, 5, state]
        await expect_live_next(c, w, 6)


async def test_resync_snapshot_when_diffs_outweigh_it(server: RunningServer) -> None:
    """§5.7, §6.2: RESYNC from a point whose diffs are bigger than the state is answered with a
    SNAPSHOT.
    """
    w = Writer(server, "s-resync-big")
    async with joined(server, "s-resync-big", "spectator") as (c, welcome):
        for i in range(1, 6):
            await w.patch([0, ["k"], "v" * 500 + str(i)])
            await c.recv()
        await c.send([6, welcome["epoch"], 0])
        snap = await c.recv()
        assert snap[:3] == [3, welcome["epoch"], 5]


async def test_resync_of_trimmed_diffs_gets_snapshot() -> None:
    """§5.7, §6.8: RESYNC from before the oldest held diff is answered with a SNAPSHOT."""
    async with running_server(history_diffs=2) as server:
        w = Writer(server, "s-resync-trim")
        await w.patch([0, ["big"], "x" * 2000])
        async with joined(server, "s-resync-trim", "spectator") as (c, welcome):
            for i in range(2, 6):
                await w.patch([0, ["n"], i])
                await c.recv()
            await c.send([6, welcome["epoch"], 2])
            assert (await c.recv())[:3] == [3, welcome["epoch"], 5]
            await c.send([6, welcome["epoch"], 3])
            assert [(await c.recv())[1] for _ in range(2)] == [4, 5]


# --- replay to live with no gap -----------------------------------------------------------------


async def test_replay_then_live_has_no_gap_or_duplicate() -> None:
    """§6.4: Resuming while an agent floods actions: seqs run from resume + 1 to the end,
    each once.
    """
    async with running_server(action_rate=0) as server:
        await _replay_then_live(server)


async def _replay_then_live(server: RunningServer) -> None:
    room = "s-switch"
    w = Writer(server, room)
    await w.patch([0, ["big"], "x" * 20_000])
    epoch = (await room_state(server, room))["epoch"]
    total = 150
    async with joined(server, room, client="flood") as (agent, _):

        async def flood() -> None:
            for aid in range(1, total + 1):
                await agent.send([4, aid, "patch", [[0, ["n"], aid]]])
                if aid % 10 == 0:
                    await asyncio.sleep(0)

        flooding = asyncio.create_task(flood())
        results = []
        for _ in range(3):
            async with resumed(server, room, [epoch, 1]) as (c, welcome):
                expect = welcome["seq"] + 1 if welcome["sync"] == "snapshot" else 2
                if welcome["sync"] == "snapshot":
                    assert (await c.recv())[0] == 3
                results.append(welcome["sync"])
                last = 1 + total
                got = []
                while not got or got[-1] < last:
                    if welcome["seq"] == last and not got:
                        break
                    message = await c.recv(TIMEOUT)
                    assert message[0] == 5
                    got.append(message[1])
                if got:
                    assert got == list(range(expect, last + 1))
        await flooding
    assert "replay" in results


async def test_large_replay_spans_several_frames_in_order() -> None:
    """§6.8: A replay bigger than one write arrives as several frames, every DIFF once and
    in order.
    """
    async with running_server(action_rate=0) as server:
        w = Writer(server, "s-chunks")
        for key in ("a", "b", "c"):
            await w.patch([0, [key], "x" * 900_000])
        for i in range(40):
            await w.patch([0, ["n"], "y" * 10_000 + str(i)])
        body = await room_state(server, "s-chunks")
        async with bare(server.room_url("s-chunks")) as c:
            welcome = await c.hello("spectator", resume=[body["epoch"], 3])
            assert welcome["sync"] == "replay"
            frames = 1  # WELCOME's frame, which hello() read, carries the first DIFFs
            seqs: list[int] = []
            while len(seqs) < 40:
                frames += 0 if c.buffer else 1
                message = await c.recv()
                assert message[0] == 5
                seqs.append(message[1])
            assert seqs == list(range(4, 44))
            assert frames > 1


async def test_resume_at_oldest_replays_across_history_compaction() -> None:
    """§6.8, §10.2: Resuming at `oldest` replays while diffs are small, also as the history compacts
    itself.
    """
    async with (
        running_server(action_rate=0, history_diffs=10) as server,
        joined(server, "s-compact", client="bulk") as (agent, welcome),
        http_session() as http,
    ):
        epoch = welcome["epoch"]
        await agent.send([4, 1, "patch", [[0, ["big"], "x" * 20_000]]])
        await agent.send(*([4, aid, "patch", [[0, ["n"], aid]]] for aid in range(2, 1030)))
        while (await agent.recv())[:2] != [7, 1029]:
            pass
        for aid in range(1030, 1046):  # the history compacts somewhere in here
            await agent.send([4, aid, "patch", [[0, ["n"], aid]]])
            while (await agent.recv())[:2] != [7, aid]:
                pass
            head = await get_json(http, f"{server.http_url}/rooms/s-compact/head")
            assert head["seq"] == aid and head["oldest"] == aid - 10
            async with resumed(server, "s-compact", [epoch, head["oldest"]]) as (c, w):
                assert w["sync"] == "replay", aid
                seqs = [(await c.recv())[1] for _ in range(10)]
                assert seqs == list(range(aid - 9, aid + 1))


@pytest.mark.parametrize(("shift", "expected"), [(0, "snapshot"), (-1, "replay"), (1, "snapshot")])
async def test_replay_needs_strictly_fewer_bytes_than_the_snapshot(
    server: RunningServer, shift: int, expected: str
) -> None:
    """§6.2: At equal sizes the server sends the SNAPSHOT; one byte fewer for the replay, it
    replays.
    """
    room = f"s-exact{shift}"
    w = Writer(server, room)
    await w.patch([0, ["big"], "x" * 300])
    epoch = (await room_state(server, room))["epoch"]

    def sizes(n: int) -> tuple[int, int]:
        replay = packed_len([5, 2, [[0, ["s"], "y" * n]]]) + packed_len(
            [5, 3, [[0, ["s"], "z" * n]]]
        )
        snapshot = packed_len([3, epoch, 3, {"big": "x" * 300, "s": "z" * n}])
        return replay, snapshot

    n = next(n for n in range(1, 2000) if sizes(n)[0] == sizes(n)[1]) + shift
    for fill in "yz":  # two diffs of one size (a set to the same value would be no diff)
        await w.patch([0, ["s"], fill * n])
    replay, snapshot = sizes(n)
    assert (replay < snapshot) == (expected == "replay")
    async with resumed(server, room, [epoch, 1]) as (_, welcome):
        assert welcome["sync"] == expected, (replay, snapshot)

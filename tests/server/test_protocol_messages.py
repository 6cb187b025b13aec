"""Conformance: docs/protocol.md §5 (messages), spoken by a bare websockets + msgpack client.

Also home of the small helpers the other conformance modules share (``joined``,
``Bystander``), so that every module talks to the server the same way.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import websockets

from tests.helpers import (
    TIMEOUT,
    BareClient,
    RunningServer,
    bare,
    http_session,
    make_room,
    running_server,
)

EPOCH_RE = re.compile(r"[A-Za-z0-9_-]{8,64}")


@contextlib.asynccontextmanager
async def joined(
    server: RunningServer, room: str, role: str = "agent", **hello: Any
) -> AsyncIterator[tuple[BareClient, dict[str, Any]]]:
    """A bare client that sent HELLO and read its WELCOME (and SNAPSHOT, when one follows).

    A spectator's room is created first, as an agent's join would (spectators never create
    rooms: tests/server/test_room_names.py)."""
    if role == "spectator":
        await make_room(server, room)
    async with bare(server.room_url(room)) as client:
        welcome = await client.hello(role, **hello)
        if welcome["sync"] == "snapshot":
            snapshot = await client.recv()
            assert snapshot[0] == 3 and snapshot[1:3] == [welcome["epoch"], welcome["seq"]]
        yield client, welcome


class Bystander:
    """An agent connected before a bad client misbehaves; it must go on being served."""

    def __init__(self, client: BareClient, name: str) -> None:
        self.client = client
        self.name = name
        self.aid = 0

    async def served(self) -> int:
        """Act, then see this action's DIFF and then its ACK; return the diff's seq."""
        self.aid += 1
        op = [0, ["bystander", self.name], self.aid]
        await self.client.send([4, self.aid, "patch", [op]])
        while True:
            message = await self.client.recv()
            if message[0] == 5 and message[2] == [op]:
                seq = int(message[1])
                break
            assert message[0] == 5, f"expected our DIFF before our ACK, got {message}"
        assert await self.client.recv() == [7, self.aid, seq]
        return seq


@contextlib.asynccontextmanager
async def bystander(server: RunningServer, room: str) -> AsyncIterator[Bystander]:
    async with joined(server, room, client="bystander") as (client, _):
        yield Bystander(client, "b")


async def until_ack(client: BareClient, aid: int) -> list[Any]:
    """Every message up to and including the ACK or ERROR of ``aid``."""
    messages = []
    while True:
        message = await client.recv()
        messages.append(message)
        if message[0] in (7, 8) and message[1] == aid:
            return messages


def check_diff_before_ack(messages: list[Any]) -> None:
    """Each ACK with a seq comes after the DIFF of that seq; DIFF seqs have no gap."""
    diff_seqs = [m[1] for m in messages if m[0] == 5]
    if diff_seqs:
        assert diff_seqs == list(range(diff_seqs[0], diff_seqs[0] + len(diff_seqs)))
    seen: set[int] = set()
    for m in messages:
        if m[0] == 5:
            seen.add(m[1])
        elif m[0] == 7 and m[2] is not None and m[2] in diff_seqs:
            assert m[2] in seen, f"ACK {m} before its DIFF"


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


# --- HELLO and WELCOME -------------------------------------------------------------------------


async def test_hello_gets_welcome_then_snapshot(server: RunningServer) -> None:
    """§5.2, §5.3, §6.1: HELLO without resume gets WELCOME (head seq, role, client, acked 0,
    snapshot) + SNAPSHOT.
    """
    async with bare(server.room_url("m-hello")) as c:
        await c.send([1, {"v": 1, "role": "agent", "client": "alice"}])
        kind, welcome = await c.recv()
        assert kind == 2
        # The base keys, plus statecast's max_message extension (§5.3).
        assert set(welcome) == {"epoch", "seq", "role", "client", "acked", "sync", "max_message"}
        assert EPOCH_RE.fullmatch(welcome["epoch"])
        assert welcome == {
            "epoch": welcome["epoch"],
            "seq": 0,
            "role": "agent",
            "client": "alice",
            "acked": 0,
            "sync": "snapshot",
            "max_message": 1 << 20,
        }
        assert await c.recv() == [3, welcome["epoch"], 0, {}]


async def test_agent_without_client_id_gets_one_assigned(server: RunningServer) -> None:
    """§5.2: An agent's HELLO without 'client' gets a server-assigned id in WELCOME,
    reusable later.
    """
    async with joined(server, "m-assign") as (c, welcome):
        client = welcome["client"]
        assert isinstance(client, str) and client
        await c.send([4, 1, "patch", [[0, ["a"], 1]]])
        await c.recv_type(7)
    async with joined(server, "m-assign", client=client) as (_, again):
        assert again["client"] == client and again["acked"] == 1


async def test_spectator_welcome(server: RunningServer) -> None:
    """§2.5, §5.3: A spectator is welcomed as a spectator, with acked 0, and gets the snapshot."""
    async with joined(server, "m-spec", "spectator") as (_, welcome):
        assert welcome["role"] == "spectator" and welcome["acked"] == 0
        assert welcome["sync"] == "snapshot"


async def test_welcome_seq_is_the_head(server: RunningServer) -> None:
    """§5.3, §5.4: WELCOME's seq is the head at that moment, and the SNAPSHOT is the state at
    that seq.
    """
    async with joined(server, "m-head", client="w") as (c, _):
        for aid in (1, 2, 3):
            await c.send([4, aid, "patch", [[0, ["n"], aid]]])
            await c.recv_type(7)
    async with bare(server.room_url("m-head")) as c2:
        welcome = await c2.hello("spectator")
        assert welcome["seq"] == 3
        assert await c2.recv() == [3, welcome["epoch"], 3, {"n": 3}]


async def test_hello_and_action_in_one_frame(server: RunningServer) -> None:
    """§4.2, §5.10: A frame may carry HELLO followed by ACTIONs; they are taken in order."""
    async with bare(server.room_url("m-stream")) as c:
        await c.send(
            [1, {"v": 1, "role": "agent", "client": "s"}],
            [4, 1, "patch", [[0, ["a"], 1]]],
            [4, 2, "patch", [[0, ["b"], 2]]],
        )
        assert (await c.recv())[0] == 2
        assert (await c.recv())[0] == 3
        messages = (await until_ack(c, 1)) + (await until_ack(c, 2))
        # Actions that arrive together may be applied in one pass: their DIFFs, then ACKs.
        assert [m for m in messages if m[0] == 5] == [
            [5, 1, [[0, ["a"], 1]]],
            [5, 2, [[0, ["b"], 2]]],
        ]
        assert [m for m in messages if m[0] == 7] == [[7, 1, 1], [7, 2, 2]]
        check_diff_before_ack(messages)


# --- ACTION, DIFF, ACK, ERROR ------------------------------------------------------------------


async def test_action_diff_reaches_everyone_and_actor_gets_diff_before_ack(
    server: RunningServer,
) -> None:
    """§5.6, §5.10: An applied action is one DIFF of exactly its ops to every subscriber; ACK
    after it.
    """
    async with (
        joined(server, "m-act", client="a") as (a, _),
        joined(server, "m-act", client="b") as (b, _),
        joined(server, "m-act", "spectator") as (s, _),
    ):
        ops = [[0, ["m", "k"], [1, 2]], [2, ["m", "k", -1], 3], [1, ["m", "k", 0]]]
        await a.send([4, 1, "patch", ops])
        assert await a.recv() == [5, 1, ops]
        assert await a.recv() == [7, 1, 1]
        assert await b.recv() == [5, 1, ops]
        assert await s.recv() == [5, 1, ops]
        await b.send([4, 1, "patch", [[1, ["m"]]]])
        assert await a.recv() == [5, 2, [[1, ["m"]]]]
        assert await b.recv() == [5, 2, [[1, ["m"]]]]
        assert await b.recv() == [7, 1, 2]
        assert await s.recv() == [5, 2, [[1, ["m"]]]]


async def test_empty_patch_acks_the_head_and_sends_no_diff(server: RunningServer) -> None:
    """§5.8, §9.1: An applied action with no ops gets ACK seq = head, and no DIFF reaches anyone."""
    async with bystander(server, "m-noop") as by, joined(server, "m-noop", client="n") as (c, _):
        head = await by.served()
        assert await c.recv() == [5, head, [[0, ["bystander", "b"], 1]]]
        await c.send([4, 1, "patch", []])
        assert await c.recv() == [7, 1, head]
        # The bystander's next message is the DIFF of its own next action: no DIFF came between.
        assert await by.served() == head + 1


async def test_rejected_action_gets_error_with_its_aid(server: RunningServer) -> None:
    """§5.9: A rejected action gets ERROR [8, aid, code, message] and changes nothing."""
    async with bystander(server, "m-err") as by, joined(server, "m-err", client="e") as (c, _):
        await c.send([4, 1, "patch", [[1, ["missing"]]]])
        kind, aid, code, message = await c.recv()
        assert (kind, aid, code) == (8, 1, "invalid") and isinstance(message, str)
        await c.send([4, 2, "nope", None])
        assert (await c.recv())[:3] == [8, 2, "unknown_action"]
        assert await by.served() == 1


async def test_exactly_once_duplicates_get_ack_nil(server: RunningServer) -> None:
    """§5.8, §6.7: An ACTION with aid <= the last processed is not applied again: ACK [7,
    aid, nil].
    """
    async with joined(server, "m-once", client="x") as (c, _):
        await c.send([4, 5, "patch", [[0, ["n"], 1]]])
        assert await c.recv() == [5, 1, [[0, ["n"], 1]]]
        assert await c.recv() == [7, 5, 1]
        await c.send([4, 5, "patch", [[0, ["n"], 2]]])
        assert await c.recv() == [7, 5, None]
        await c.send([4, 3, "patch", [[0, ["n"], 3]]])
        assert await c.recv() == [7, 3, None]
        # A rejected aid counts as processed too.
        await c.send([4, 6, "patch", [[1, ["missing"]]]])
        assert (await c.recv())[:3] == [8, 6, "invalid"]
        await c.send([4, 6, "patch", [[0, ["n"], 6]]])
        assert await c.recv() == [7, 6, None]
    async with http_session() as http:
        body = await get_json(http, f"{server.http_url}/rooms/m-once/state")
        assert body["seq"] == 1 and body["state"] == {"n": 1}


async def test_exactly_once_across_reconnect(server: RunningServer) -> None:
    """§6.7: WELCOME's acked is the last processed aid; a re-sent action after reconnect is
    ACK nil.
    """
    async with joined(server, "m-reconnect", client="r") as (c, welcome):
        await c.send([4, 1, "patch", [[0, ["n"], 1]]], [4, 2, "patch", [[0, ["n"], 2]]])
        await c.recv_type(7)
        assert await c.recv_type(7) == [7, 2, 2]
    async with joined(server, "m-reconnect", client="r", resume=[welcome["epoch"], 2]) as (
        c,
        again,
    ):
        assert again["acked"] == 2 and again["sync"] == "current"
        await c.send([4, 2, "patch", [[0, ["n"], 99]]], [4, 3, "patch", [[0, ["n"], 3]]])
        messages = await until_ack(c, 3)
        assert len(messages) == 3
        assert all(m in messages for m in ([7, 2, None], [5, 3, [[0, ["n"], 3]]], [7, 3, 3]))
        check_diff_before_ack(messages)


async def test_aids_are_per_client(server: RunningServer) -> None:
    """§6.7: Two clients' aids are independent: the same aid from another client is applied."""
    async with (
        joined(server, "m-per", client="p") as (p, _),
        joined(server, "m-per", client="q") as (q, _),
    ):
        await p.send([4, 1, "patch", [[0, ["p"], 1]]])
        assert await p.recv_type(7) == [7, 1, 1]
        await q.send([4, 1, "patch", [[0, ["q"], 1]]])
        assert await q.recv_type(7) == [7, 1, 2]


async def test_spectator_action_is_forbidden(server: RunningServer) -> None:
    """§2.5, §5.5: A spectator's ACTION gets ERROR forbidden, changes nothing, and the connection
    stays open.
    """
    async with (
        bystander(server, "m-forbid") as by,
        joined(server, "m-forbid", "spectator") as (
            s,
            _,
        ),
    ):
        await s.send([4, 1, "patch", [[0, ["a"], 1]]])
        assert (await s.recv())[:3] == [8, 1, "forbidden"]
        await s.send([6, "whatever-epoch", 0])
        snapshot = await s.recv()
        assert snapshot[0] == 3 and snapshot[2:] == [0, {}]
        assert await by.served() == 1
        assert (await s.recv())[:2] == [5, 1]


async def test_resync_at_head_sends_nothing_and_live_diffs_follow(server: RunningServer) -> None:
    """§5.7: RESYNC naming the head is answered with nothing; live DIFFs go on."""
    async with joined(server, "m-resync", client="z") as (c, welcome):
        await c.send([6, welcome["epoch"], 0], [4, 1, "patch", [[0, ["a"], 1]]])
        assert await c.recv() == [5, 1, [[0, ["a"], 1]]]
        assert await c.recv() == [7, 1, 1]


async def test_diff_seqs_have_no_gap_under_concurrent_agents(server: RunningServer) -> None:
    """§2.4, §6.4: With several agents acting at once, every subscriber sees seqs 1..N with
    no gap.
    """
    n_agents, per_agent = 4, 25
    async with contextlib.AsyncExitStack() as stack:
        agents = [
            (await stack.enter_async_context(joined(server, "m-many", client=f"a{i}")))[0]
            for i in range(n_agents)
        ]
        spec, _ = await stack.enter_async_context(joined(server, "m-many", "spectator"))
        for aid in range(1, per_agent + 1):
            for i, agent in enumerate(agents):
                await agent.send([4, aid, "patch", [[0, [f"a{i}"], aid]]])
        total = n_agents * per_agent
        seqs = [(await spec.recv(TIMEOUT))[1] for _ in range(total)]
        assert seqs == list(range(1, total + 1))


async def _slow_skips(http: aiohttp.ClientSession, server: RunningServer) -> float:
    async with http.get(f"{server.http_url}/metrics") as r:
        for line in (await r.text()).splitlines():
            if line.startswith("statecast_slow_subscriber_skips_total"):
                return float(line.split()[-1])
    return 0.0


async def test_lagging_agent_gets_its_ack_after_the_snapshot_holding_its_diff() -> None:
    """§5.10, §6.5: A lagging agent skipped ahead by SNAPSHOT sees its action applied before
    its ACK.
    """
    async with (
        running_server(slow_high_water=64 * 1024) as server,
        http_session() as http,
        # max_queue=1: the client stops reading from its socket while we do not recv().
        websockets.connect(
            server.room_url("m-lag"), max_size=None, compression=None, max_queue=1
        ) as ws,
    ):
        slow = BareClient(ws)
        await slow.hello("agent", client="slow")
        assert (await slow.recv())[0] == 3
        for aid in range(1, 101):  # bounded: the kernel's buffers fill long before this
            big = chr(65 + aid % 26) * (512 * 1024)  # a new value each time: a real diff
            body = {"client": "w", "aid": aid, "name": "patch", "args": [[0, ["big"], big]]}
            async with http.post(f"{server.http_url}/rooms/m-lag/actions", json=body) as r:
                assert r.status == 200
            if await _slow_skips(http, server) >= 1:
                break
        else:
            raise AssertionError("the reader never lagged")
        await slow.send([4, 1, "patch", [[0, ["mine"], 1]]])
        seq = None
        snapshots = 0
        while True:
            message = await slow.recv()
            if message[0] == 5:
                assert seq is None or message[1] == seq + 1
                seq = message[1]
            elif message[0] == 3:
                seq = message[2]
                snapshots += 1
                assert message[3]["mine"] == 1
            else:
                assert message[0] == 7 and message[1] == 1
                assert seq is not None and seq >= message[2], "ACK before its effect"
                break
        # The skip happened: the agent caught up by a SNAPSHOT (holding its own action),
        # and its ACK came after it.
        assert snapshots >= 1


async def test_error_with_nil_aid_is_a_non_fatal_complaint() -> None:
    """§5.7, §5.9: A refused RESYNC gets ERROR [8, nil, code, message] and the connection
    stays open.
    """
    async with (
        running_server(action_rate=0.001, action_burst=1, rate_strikes=0) as server,
        joined(server, "m-nil", "spectator") as (c, welcome),
        http_session() as http,
    ):
        await c.send([6, welcome["epoch"], 0], [6, "other-epoch", 0])
        kind, aid, code, message = await c.recv()
        assert (kind, aid, code) == (8, None, "rate_limited") and isinstance(message, str)
        body = {"client": "h", "aid": 1, "name": "patch", "args": [[0, ["a"], 1]]}
        async with http.post(f"{server.http_url}/rooms/m-nil/actions", json=body) as r:
            assert r.status == 200
        assert await c.recv() == [5, 1, [[0, ["a"], 1]]]


async def test_deflate_and_plain_clients_share_a_room() -> None:
    """§4.5: With compression on, deflate and plain connections both get every DIFF and ACK."""
    async with (
        running_server(compression=True) as server,
        websockets.connect(server.room_url("m-deflate"), compression="deflate") as w1,
        websockets.connect(server.room_url("m-deflate"), compression=None) as w2,
    ):
        assert w1.protocol.extensions and not w2.protocol.extensions
        deflated, plain = BareClient(w1), BareClient(w2)
        for client, name in ((deflated, "d"), (plain, "p")):
            await client.hello("agent", client=name)
            assert (await client.recv())[0] == 3
        big = [[0, ["x"], "y" * 10_000]]
        await deflated.send([4, 1, "patch", big])
        assert await deflated.recv() == [5, 1, big]
        assert await deflated.recv() == [7, 1, 1]
        assert await plain.recv() == [5, 1, big]
        await plain.send([4, 1, "patch", [[1, ["x"]]]])
        assert await deflated.recv() == [5, 2, [[1, ["x"]]]]
        assert await plain.recv() == [5, 2, [[1, ["x"]]]]
        assert await plain.recv() == [7, 1, 2]

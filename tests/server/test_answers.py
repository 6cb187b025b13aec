"""Handlers that answer (docs/protocol.md §5.8): the value a handler returns travels in
its ACK, to clients that ask for answers in HELLO; it is recorded with the client's last
aid, so the same action sent again after a reconnect (or a restart) gets the same answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from statecast import connect
from statecast.protocol import codec
from statecast.protocol.errors import Rejection
from statecast.protocol.messages import MAX_ANSWER_BYTES, Ack, Welcome
from statecast.protocol.sync import ActionAcked, ClientSync
from statecast.server.room import ActionContext, Room, action
from tests.cluster_nodes import CLUSTER_FLAGS, cluster
from tests.helpers import bare, http_session, running_server

SPEC = f"board-*={__name__}:Board"


class Board(Room):
    """A task board: ``claim`` gives the agent the first free task and says which."""

    def initial_state(self) -> dict[str, Any]:
        return {"tasks": {f"t{i}": None for i in range(1, 4)}}

    @action("claim")
    def claim(self, ctx: ActionContext, args: Any) -> str:
        for task, owner in ctx.state["tasks"].items():
            if owner is None:
                ctx.set(["tasks", task], ctx.client)
                return task
        raise Rejection("conflict", "no free task")

    @action("mine")
    def mine(self, ctx: ActionContext, args: Any) -> Any:
        """Answers with part of the state itself (a read-only view, copied into the ACK)."""
        return {"tasks": ctx.state["tasks"], "me": ctx.client}

    @action("note")
    def note(self, ctx: ActionContext, args: Any) -> None:
        ctx.set(["note"], args)

    @action("huge")
    def huge(self, ctx: ActionContext, args: Any) -> str:
        ctx.set(["note"], "huge")
        return "x" * MAX_ANSWER_BYTES

    @action("odd")
    def odd(self, ctx: ActionContext, args: Any) -> object:
        ctx.set(["note"], "odd")
        return {1, 2}


async def test_call_returns_the_answer_and_act_still_the_seq() -> None:
    async with (
        running_server(room_types=(SPEC,)) as server,
        connect(server.room_url("board-1"), client="a") as agent,
    ):
        assert await agent.call("claim", None) == "t1"
        assert await agent.act("claim", None) == 2  # act(): the seq, as before
        assert agent.state is not None and agent.state["tasks"]["t2"] == "a"
        mine = await agent.call("mine", None)
        assert mine == {"tasks": {"t1": "a", "t2": "a", "t3": None}, "me": "a"}
        assert await agent.call("note", "hi") is None  # a handler that returns nothing
        async with (
            http_session() as http,
            http.post(
                f"{server.http_url}/rooms/board-1/actions",
                json={"client": "h", "aid": 1, "name": "claim"},
            ) as resp,
        ):
            assert await resp.json() == {"seq": 4, "answer": "t3"}
        with pytest.raises(Rejection) as none_left:
            await agent.call("claim", None)
        assert none_left.value.code == "conflict"


async def test_the_last_aid_sent_again_gets_its_answer_again() -> None:
    """On the wire: the answer rides as the ACK's fourth element; the client's last aid,
    sent again on a new connection, is ACK [7, aid, nil, answer]: not applied again."""
    async with running_server(room_types=(SPEC,)) as server:
        url = server.room_url("board-2")
        async with bare(url) as first:
            await first.hello(client="a", answers=True)
            await first.recv_type(3)
            await first.send([4, 1, "claim", None])
            assert await first.recv() == [5, 1, [[0, ["tasks", "t1"], "a"]]]
            assert await first.recv() == [7, 1, 1, "t1"]
        async with bare(url) as again:
            welcome = await again.hello(client="a", answers=True, resume=["x", 0])
            assert welcome["acked"] == 1
            await again.recv_type(3)
            await again.send([4, 1, "claim", None])
            assert await again.recv() == [7, 1, None, "t1"]
            await again.send([4, 2, "note", "n"])
            await again.recv_type(5)
            assert await again.recv() == [7, 2, 2]  # no answer: three elements
            await again.send([4, 2, "note", "n"], [4, 1, "claim", None])
            assert await again.recv() == [7, 2, None]  # aid 1's answer is not kept
            assert await again.recv() == [7, 1, None]


async def test_a_client_that_did_not_ask_gets_the_base_contracts_ack() -> None:
    """A client written from the base contract alone never sees a fourth ACK element."""
    async with running_server(room_types=(SPEC,)) as server, bare(server.room_url("board-3")) as c:
        await c.hello(client="a")
        await c.recv_type(3)
        await c.send([4, 1, "claim", None])
        await c.recv_type(5)
        assert await c.recv() == [7, 1, 1]
        await c.send([4, 1, "claim", None])
        assert await c.recv() == [7, 1, None]


@pytest.mark.parametrize(("name", "code"), [("huge", "too_large"), ("odd", "invalid")])
async def test_an_answer_too_large_or_not_a_state_value_refuses_the_action(
    name: str, code: str
) -> None:
    async with (
        running_server(room_types=(SPEC,)) as server,
        connect(server.room_url("board-4"), client="a") as agent,
    ):
        with pytest.raises(Rejection) as refused:
            await agent.call(name, None)
        assert refused.value.code == code and "answer" in refused.value.message
        assert agent.seq == 0 and agent.state is not None and "note" not in agent.state


async def test_the_answer_survives_a_restart_of_the_server(tmp_path: Path) -> None:
    store = f"sqlite:{tmp_path / 'answers.db'}"
    async with (
        running_server(room_types=(SPEC,), store=store) as server,
        bare(server.room_url("board-5")) as c,
    ):
        await c.hello(client="a", answers=True)
        await c.recv_type(3)
        await c.send([4, 7, "claim", None])
        await c.recv_type(5)
        assert await c.recv() == [7, 7, 1, "t1"]
    async with (
        running_server(room_types=(SPEC,), store=store) as server,
        bare(server.room_url("board-5")) as c,
    ):
        assert (await c.hello(client="a", answers=True))["acked"] == 7
        await c.recv_type(3)
        await c.send([4, 7, "claim", None])
        assert await c.recv() == [7, 7, None, "t1"]


def test_the_client_sends_its_last_aid_again_and_reports_an_earlier_answer_lost() -> None:
    """The sync machine after a reconnect: actions below WELCOME's acked took effect and
    their answers are gone (``answer_known`` False: call() raises ``AnswerLost``); the one at
    acked is sent again, so the room answers it with its recorded answer."""
    sync = ClientSync("agent", client="a")
    sync.connect()
    sync.receive_frame(codec.encode(Welcome("e", 0, "agent", "a", 0, "snapshot")))
    sync.receive_frame(codec.encode_snapshot("e", 0, {}))
    sync.data_to_send()
    first, second, third = (sync.act("claim", None) for _ in range(3))
    sync.connection_lost()
    sync.events_received()
    sync.connect()
    sync.receive_frame(codec.encode(Welcome("e", 0, "agent", "a", second, "current")))
    events = sync.events_received()
    assert ActionAcked(first, None, None, answer_known=False) in events
    sent = [codec.decode_client_frame(frame)[0] for frame in sync.data_to_send()[1:]]
    assert [a.aid for a in sent] == [second, third]  # type: ignore[union-attr]
    sync.receive_frame(codec.encode(Ack(second, None, "t2")))
    assert sync.events_received() == [ActionAcked(second, None, "t2")]


async def test_an_action_forwarded_to_the_owner_brings_its_answer_back(redis_url: str) -> None:
    """In a cluster an agent on a follower gets the owner's answer: over WebSocket, over
    HTTP, and again for its last aid sent anew (real nodes on a real Redis)."""
    flags = (*CLUSTER_FLAGS, "--room-type", f"board-*={__name__}:Board")
    async with cluster(redis_url, 2, *flags) as (owner, follower):
        async with connect(owner.room_url("board-c"), client="first") as first:
            assert await first.call("claim", None) == "t1"  # node 0 loads it: the owner
        async with bare(follower.room_url("board-c")) as c:
            await c.hello(client="a", answers=True)
            await c.recv_type(3)
            await c.send([4, 1, "claim", None])
            assert await c.recv_type(7) == [7, 1, 2, "t2"]
            await c.send([4, 1, "claim", None])
            assert await c.recv_type(7) == [7, 1, None, "t2"]
        status, body = await follower.post(
            "/rooms/board-c/actions", {"client": "h", "aid": 1, "name": "claim"}
        )
        assert (status, body) == (200, {"seq": 3, "answer": "t3"})


async def test_the_last_aid_sent_again_is_answered_even_with_no_tokens_left() -> None:
    """No limit refuses the re-sent last aid: an ERROR would say it changed nothing, and a
    client retrying on it would apply the action twice."""
    async with running_server(room_types=(SPEC,), identity_action_rate=1) as server:
        url = server.room_url("board-6")
        async with bare(url) as first:
            await first.hello(client="a", answers=True)
            await first.recv_type(3)
            await first.send([4, 1, "claim", None], [4, 2, "claim", None])
            assert await first.recv_type(7) == [7, 1, 1, "t1"]
            assert await first.recv_type(7) == [7, 2, 2, "t2"]  # the burst (2) is spent
        async with bare(url) as again:
            assert (await again.hello(client="a", answers=True, resume=["x", 0]))["acked"] == 2
            await again.recv_type(3)
            await again.send([4, 2, "claim", None], [4, 3, "claim", None])
            replies = {m[1]: m for m in [await again.recv(), await again.recv()]}
            assert replies[2] == [7, 2, None, "t2"]
            assert replies[3][:3] == [8, 3, "rate_limited"]

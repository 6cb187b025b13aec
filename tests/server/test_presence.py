"""Presence: join/leave hooks as DIFFs, the leave grace, one connection per agent id (4009)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from structlog.testing import capture_logs

from statecast.protocol.client import connect
from statecast.protocol.errors import ClientIdTakenOver, Rejection, ServerClosed
from statecast.server.room import ActionContext, Room, action
from statecast.server.rooms.document import PresenceDocumentRoom
from tests.helpers import (
    TIMEOUT,
    BareClient,
    bare,
    eventually,
    http_session,
    make_room,
    running_server,
)

GRID = ("grid-*=statecast.server.rooms.grid:GridRoom",)
SECRET = "statecast-test-secret-0123456789abcdef"


async def _join(ws: BareClient, role: str = "agent", **fields: Any) -> dict[str, Any]:
    """HELLO, then the WELCOME and (for a fresh join) its SNAPSHOT."""
    welcome = await ws.hello(role, **fields)
    if welcome["sync"] == "snapshot":
        await ws.recv_type(3)
    return welcome


async def _reply(client: BareClient, aid: int) -> list[Any]:
    """The ACK or ERROR for ``aid``, skipping DIFFs."""
    while True:
        message = await client.recv()
        if message[0] in (7, 8) and message[1] == aid:
            return message


class FragileRoom(Room):
    """Hooks that record a change and then raise for agents named bad-*."""

    @action("note")
    def note(self, ctx: ActionContext, args: Any) -> None:
        ctx.set(["note"], args)

    def on_join(self, ctx: ActionContext) -> None:
        ctx.set(["here", ctx.client], True)
        if ctx.client.startswith("bad"):
            raise RuntimeError("a bug in on_join")

    def on_leave(self, ctx: ActionContext) -> None:
        ctx.delete(["here", ctx.client])
        if ctx.client.startswith("good"):
            raise RuntimeError("a bug in on_leave")


async def test_joins_and_leaves_are_diffs_spectators_see_live_and_on_resume() -> None:
    """Agent joins and leaves are numbered DIFFs under "presence"; a resume replays them."""
    async with running_server(document_presence=True, leave_grace=0.0) as srv:
        url = srv.room_url("p")
        await make_room(srv, "p")
        async with bare(url) as spec:
            epoch = (await _join(spec, "spectator"))["epoch"]
            async with bare(url) as a:
                await _join(a, client="a")
                assert await spec.recv() == [5, 1, [[0, ["presence"], {"a": True}]]]
                await a.send([4, 1, "patch", [[0, ["doc"], "x" * 400]]])
                assert (await spec.recv())[1] == 2
                async with bare(url) as b:
                    await _join(b, client="b")
                    assert await spec.recv() == [5, 3, [[0, ["presence", "b"], True]]]
                    assert srv.app.rooms.rooms["p"].presence.agents == ["a", "b"]
                assert await spec.recv() == [5, 4, [[1, ["presence", "b"]]]]
            assert await spec.recv() == [5, 5, [[1, ["presence", "a"]]]]
        live = srv.app.rooms.rooms["p"]
        assert live.feed.state == {"doc": "x" * 400, "presence": {}}
        async with bare(url) as again:
            welcome = await again.hello("spectator", resume=[epoch, 2])
            assert welcome["sync"] == "replay"
            assert [await again.recv() for _ in range(3)] == [
                [5, 3, [[0, ["presence", "b"], True]]],
                [5, 4, [[1, ["presence", "b"]]]],
                [5, 5, [[1, ["presence", "a"]]]],
            ]
            assert live.presence.spectators == 1  # counted, never a DIFF
            assert live.feed.head == 5


async def test_presence_is_durable_and_agents_not_back_after_a_restart_leave(
    tmp_path: Path,
) -> None:
    """Presence is in the stored state; after a restart an agent that stays away leaves."""
    store = f"sqlite:{tmp_path / 'rooms.db'}"
    first = running_server(store=store, document_presence=True, leave_grace=60.0)
    async with first as srv, bare(srv.room_url("p")) as a, bare(srv.room_url("p")) as b:
        await _join(a, client="a")
        await _join(b, client="b")
        await b.recv_type(5)  # b's own join
    second = running_server(store=store, document_presence=True, leave_grace=0.5)
    async with second as srv, bare(srv.room_url("p")) as spec, bare(srv.room_url("p")) as b:
        welcome = await _join(spec, "spectator")
        assert welcome["seq"] == 2
        await _join(b, client="b")  # back (within the grace): neither a leave nor a join
        assert await spec.recv() == [5, 3, [[1, ["presence", "a"]]]]
        assert srv.app.rooms.rooms["p"].feed.state == {"presence": {"b": True}}


async def test_a_hook_that_raises_changes_nothing_and_the_room_keeps_serving() -> None:
    """A raising on_join or on_leave leaves no trace; other hooks and actions go on."""
    spec_ = f"fragile-*={__name__}:FragileRoom"
    async with running_server(room_types=(spec_,), leave_grace=0.0) as srv:
        url = srv.room_url("fragile-1")
        await make_room(srv, "fragile-1")
        async with bare(url) as spec:
            await _join(spec, "spectator")
            with capture_logs() as logs:
                async with bare(url) as bad:
                    await _join(bad, client="bad-1")
                    await bad.send([4, 1, "note", "still here"])
                    assert await _reply(bad, 1) == [7, 1, 1]
                    assert await spec.recv() == [5, 1, [[0, ["note"], "still here"]]]
                    async with bare(url) as good:
                        await _join(good, client="good-1")
                        assert await spec.recv() == [5, 2, [[0, ["here", "good-1"], True]]]
                # bad-1 leaves: its on_leave deletes a key that is not there, so it changes
                # nothing; good-1's on_leave raises after its delete, which is undone.
                live = srv.app.rooms.rooms["fragile-1"]
                await eventually(lambda: not live.presence.joined)
                await live.drain()
                async with bare(url) as later:
                    await _join(later, client="later")
                    assert await spec.recv() == [5, 3, [[0, ["here", "later"], True]]]
            here = {"good-1": True, "later": True}
            assert live.feed.state == {"note": "still here", "here": here}
            raised = [e for e in logs if e["event"] == "room hook raised"]
            assert {(e["hook"], e["client"]) for e in raised} >= {
                ("join", "bad-1"),
                ("leave", "good-1"),
            }


async def test_reconnect_within_the_grace_is_neither_leave_nor_join() -> None:
    """A dropped agent that resumes within --leave-grace makes no DIFF; its next action does.
    The grace is short, and the proof that no leave was left pending is another agent's
    leave: dropped after the first agent's reconnect, its leave is the next DIFF, where a
    pending leave of the first (its timer started earlier) would have come first."""
    async with running_server(document_presence=True, leave_grace=0.5) as srv:
        url = srv.room_url("p")
        await make_room(srv, "p")
        async with bare(url) as spec, bare(url) as a, bare(url) as b:
            await _join(spec, "spectator")
            welcome = await _join(a, client="a")
            assert await spec.recv() == [5, 1, [[0, ["presence"], {"a": True}]]]
            await _join(b, client="b")
            assert await spec.recv() == [5, 2, [[0, ["presence", "b"], True]]]
            a.ws.transport.abort()
            async with bare(url) as back:
                resumed = await back.hello("agent", client="a", resume=[welcome["epoch"], 2])
                assert resumed["sync"] == "current"
                await back.send([4, 1, "patch", [[0, ["n"], 1]]])
                assert await _reply(back, 1) == [7, 1, 3]
                assert await spec.recv() == [5, 3, [[0, ["n"], 1]]]
                b.ws.transport.abort()
                assert await spec.recv() == [5, 4, [[1, ["presence", "b"]]]]
                assert srv.app.rooms.rooms["p"].feed.state["presence"] == {"a": True}


async def test_past_the_grace_an_agent_leaves_and_its_grid_piece_is_removed() -> None:
    """The grid room removes a piece whose agent stayed away past the grace."""
    async with running_server(room_types=GRID, leave_grace=0.3) as srv:
        url = srv.room_url("grid-1")
        await make_room(srv, "grid-1")
        async with bare(url) as spec:
            await _join(spec, "spectator")
            async with bare(url) as a:
                await _join(a, client="a")
                await a.send([4, 1, "join", {"x": 2, "y": 3}])
                assert await _reply(a, 1) == [7, 1, 1]
            assert await spec.recv() == [5, 1, [[0, ["agents", "a"], {"x": 2, "y": 3}]]]
            assert await spec.recv() == [5, 2, [[1, ["agents", "a"]]]]
            assert srv.app.rooms.rooms["grid-1"].feed.state["agents"] == {}


async def test_a_second_connection_with_one_agent_id_takes_over_with_4009() -> None:
    """The older connection is closed with 4009 and logged; the newer one acts."""
    async with running_server(document_presence=True) as srv:
        url = srv.room_url("p")
        await make_room(srv, "p")
        async with bare(url) as spec, bare(url) as first, bare(url) as second:
            await _join(spec, "spectator")
            await _join(first, client="bot-1")
            assert await spec.recv() == [5, 1, [[0, ["presence"], {"bot-1": True}]]]
            with capture_logs() as logs:
                welcome = await _join(second, client="bot-1")
                assert await first.closed() == 4009
            assert first.ws.close_reason == "another connection took over this client id"
            assert any(e["event"] == "client id taken over" for e in logs)
            await second.send([4, welcome["acked"] + 1, "patch", [[0, ["n"], 1]]])
            assert await _reply(second, 1) == [7, 1, 2]
            assert await spec.recv() == [5, 2, [[0, ["n"], 1]]]  # no leave, no join


async def test_a_takeover_is_not_refused_by_the_room_connection_limit() -> None:
    """An agent replacing its own connection in a full room takes over instead of 1013."""
    async with running_server(max_room_connections=1) as srv:
        url = srv.room_url("p")
        async with bare(url) as first, bare(url) as second, bare(url) as third:
            await _join(first, client="bot-1")
            await _join(second, client="bot-1")
            assert await first.closed() == 4009
            await third.send([1, {"v": 1, "role": "agent", "client": "bot-2"}])
            assert await third.closed() == 1013


async def test_the_python_client_raises_a_clear_error_on_4009_and_stays_down() -> None:
    """connect() with a taken-over id fails with ClientIdTakenOver and does not reconnect."""
    async with running_server() as srv:
        url = srv.room_url("p")
        async with connect(url, client="bot-1") as room, bare(url) as other:
            await _join(other, client="bot-1")
            with pytest.raises(ClientIdTakenOver, match="client id 'bot-1'"):
                await asyncio.wait_for(room.act("patch", [[0, ["n"], 1]]), TIMEOUT)
            assert room.connections == 1
            assert "n" not in srv.app.rooms.rooms["p"].feed.state


async def test_http_actions_are_not_presence() -> None:
    """An HTTP action has no connection: it runs no hook; agents may not write "presence"."""
    async with running_server(document_presence=True) as srv, http_session() as http:
        url = f"{srv.http_url}/rooms/p/actions"
        body = {"client": "h", "aid": 1, "name": "patch", "args": [[0, ["n"], 1]]}
        async with http.post(url, json=body) as resp:
            assert await resp.json() == {"seq": 1}
        body = {"client": "h", "aid": 2, "name": "patch", "args": [[0, ["presence", "x"], 1]]}
        async with http.post(url, json=body) as resp:
            assert resp.status == 403
            assert (await resp.json())["code"] == "forbidden"
        assert srv.app.rooms.rooms["p"].feed.state == {"n": 1}


async def test_the_document_room_without_the_flag_records_no_presence() -> None:
    """By default an agent's join changes nothing: the document room is as it was."""
    async with running_server() as srv, bare(srv.room_url("p")) as a:
        await _join(a, client="a")
        await a.send([4, 1, "patch", [[0, ["n"], 1]]])
        assert await a.recv() == [5, 1, [[0, ["n"], 1]]]
        assert srv.app.rooms.rooms["p"].presence.agents == ["a"]  # connected, not recorded


def test_presence_document_room_refuses_patches_to_its_key() -> None:
    """With presence on, the server owns "presence"; a patch touching it changes nothing."""
    room = PresenceDocumentRoom("p")
    room.set_limits(max_depth=64, max_key_length=None, max_state_bytes=None)
    room.run_hook("a", "join")
    with pytest.raises(Rejection) as refused:
        room.run_action("a", "patch", [[0, ["n"], 1], [1, ["presence", "a"]]])
    assert refused.value.code == "forbidden"
    assert room.state == {"presence": {"a": True}}
    assert list(room.present_agents()) == ["a"]


# --- tokens that expire on open connections ------------------------------------------------


def _token(sub: str, ttl: float) -> str:
    now = int(time.time())
    claims = {"sub": sub, "role": "agent", "rooms": ["*"], "exp": now + int(ttl)}
    return jwt.encode(claims, SECRET, algorithm="HS256")


#: Expired 8 s ago: inside the 10 s leeway, so accepted, and closed within about 2 s.
NEARLY_EXPIRED = -8


async def test_an_open_connection_is_closed_4001_when_its_token_expires() -> None:
    """The server closes a connection with 4001 once its token's exp (plus leeway) passes."""
    async with running_server(auth="jwt", jwt_secret=SECRET) as srv, bare(srv.room_url("p")) as a:
        await _join(a, token=_token("a", NEARLY_EXPIRED))
        assert await a.closed() == 4001
        assert a.ws.close_reason == "token expired"


async def test_a_client_with_a_token_callable_resumes_after_expiry() -> None:
    """Given a callable, the client fetches a fresh token on 4001 and resumes where it was."""
    issued: list[str] = []

    async def fresh_token() -> str:
        issued.append(_token("a", NEARLY_EXPIRED if not issued else 3600))
        return issued[-1]

    server = running_server(auth="jwt", jwt_secret=SECRET, leave_grace=60.0)
    async with server as srv, connect(srv.room_url("p"), token=fresh_token) as room:
        assert await room.act("patch", [[0, ["n"], 1]]) == 1
        epoch = room.epoch
        await eventually(lambda: room.connections == 2 and room.sync.live)
        assert await room.act("patch", [[0, ["n"], 2]]) == 2
        assert (room.epoch, room.seq, room.state) == (epoch, 2, {"n": 2})
        assert len(issued) == 2


async def test_a_token_callable_that_gives_a_refused_token_is_not_retried() -> None:
    """A 4001 at HELLO (no WELCOME yet) ends the client: a fresh token did not help."""
    calls: list[int] = []

    def expired() -> str:
        calls.append(1)
        return _token("a", -3600)

    async with running_server(auth="jwt", jwt_secret=SECRET) as srv:
        with pytest.raises(ServerClosed) as closed:
            async with connect(srv.room_url("p"), token=expired):
                pass
        assert closed.value.code == 4001 and len(calls) == 1


# --- defaults and bounds ---------------------------------------------------------------------


async def test_the_1001st_spectator_of_a_room_is_accepted_by_default() -> None:
    """--max-room-connections is bounded only by --max-connections unless set."""
    async with running_server() as srv:
        url = srv.room_url("busy")
        await make_room(srv, "busy")
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(bare(url)) for _ in range(1001)]
            await asyncio.gather(*(c.send([1, {"v": 1, "role": "spectator"}]) for c in clients))
            snapshots = await asyncio.gather(*(c.recv_type(3) for c in clients))
            assert {s[2] for s in snapshots} == {0}  # spectators joining made no DIFF
            live = srv.app.rooms.rooms["busy"]
            assert live.presence.spectators == 1001
            async with bare(url) as a:
                await _join(a, client="a")
                await a.send([4, 1, "patch", [[0, ["n"], 1]]])
                assert await clients[-1].recv() == [5, 1, [[0, ["n"], 1]]]


async def test_client_ids_are_bounded_in_length_and_number_under_auth_none() -> None:
    """Past 256 characters, or a room's --max-room-clients ids, a new id is refused clearly."""
    async with running_server(max_room_clients=2) as srv, http_session() as http:
        url = srv.room_url("p")
        async with bare(url) as long:
            await long.send([1, {"v": 1, "role": "agent", "client": "x" * 257}])
            assert await long.closed() == 4003
            assert long.ws.close_reason == "client ids are at most 256 characters"
        async with bare(url) as a, bare(url) as b, bare(url) as c:
            for ws, name in ((a, "a"), (b, "b"), (c, "c")):
                await _join(ws, client=name)  # none recorded yet: all three may join
            for ws in (a, b, c):
                await ws.send([4, 1, "patch", [[0, ["n"], 1]]])
            assert [(await _reply(ws, 1))[0] for ws in (a, b)] == [7, 7]
            assert await _reply(c, 1) == [
                8,
                1,
                "forbidden",
                "the room records at most 2 client ids: reuse one",
            ]
        async with bare(url) as d:
            await d.send([1, {"v": 1, "role": "agent", "client": "d"}])
            assert await d.closed() == 4003
            assert d.ws.close_reason == "the room records at most 2 client ids: reuse one"
        body = {"client": "e", "aid": 1, "name": "patch", "args": []}
        async with http.post(f"{srv.http_url}/rooms/p/actions", json=body) as resp:
            assert resp.status == 403
            assert (await resp.json())["code"] == "forbidden"
        body = {"client": "y" * 257, "aid": 1, "name": "patch", "args": []}
        async with http.post(f"{srv.http_url}/rooms/p/actions", json=body) as resp:
            assert resp.status == 400
        async with bare(url) as again:
            welcome = await _join(again, client="a")  # a recorded id still joins
            assert welcome["acked"] == 1

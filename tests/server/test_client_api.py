"""The public client, ``from statecast import connect``, as the README uses it, on a real server."""

from __future__ import annotations

import asyncio

import pytest

from statecast import (
    Changed,  # what changes() yields is part of the public API
    Rejection,
    connect,
)
from statecast.protocol.errors import ServerClosed
from tests.helpers import TIMEOUT, RunningServer, make_room, running_server
from tests.server.test_auth import SECRET, token


async def test_spectator_act_raises_forbidden_and_sends_nothing(server: RunningServer) -> None:
    """A spectator's act() is refused as the server would refuse it: Rejection('forbidden')."""
    url = server.room_url("api-spectator")
    async with connect(url, client="a") as agent, connect(url, role="spectator") as spectator:
        with pytest.raises(Rejection) as refused:
            await spectator.act("patch", [[0, ["x"], 1]])
        assert refused.value.code == "forbidden"
        # The spectator stays connected and keeps receiving; the agent acts as before.
        seq = await agent.act("patch", [[0, ["x"], 2]])
        assert seq == 1
        await asyncio.wait_for(spectator.wait_for_seq(1), TIMEOUT)
        assert spectator.state == {"x": 2}


async def test_changes_holds_events_from_the_call_not_from_the_first_iteration(
    server: RunningServer,
) -> None:
    """Changes that arrive after changes() is called but before iteration starts are yielded;
    those from before the call are only in room.state."""
    url = server.room_url("api-changes")
    async with connect(url, client="a") as agent, connect(url, role="spectator") as spectator:
        await agent.act("patch", [[0, ["n"], 1]])
        await asyncio.wait_for(spectator.wait_for_seq(1), TIMEOUT)
        assert spectator.state == {"n": 1}
        changes = spectator.changes()  # from here on, every event is held in order
        await agent.act("patch", [[0, ["n"], 2]])
        await agent.act("patch", [[0, ["n"], 3]])
        await asyncio.wait_for(spectator.wait_for_seq(3), TIMEOUT)  # both arrived, unread
        seen = []
        async with asyncio.timeout(TIMEOUT):
            async for event in changes:
                assert isinstance(event, Changed)
                seen.append((event.seq, event.ops))
                if event.seq == 3:
                    break
        assert seen == [(2, [[0, ["n"], 2]]), (3, [[0, ["n"], 3]])]


async def test_changes_ends_with_server_closed_once_the_client_closes(
    server: RunningServer,
) -> None:
    await make_room(server, "api-close")
    async with connect(server.room_url("api-close"), role="spectator") as spectator:
        changes = spectator.changes()
    with pytest.raises(ServerClosed):
        await asyncio.wait_for(anext(changes), TIMEOUT)
    with pytest.raises(ServerClosed):  # an iterator asked for after the close ends at once
        await asyncio.wait_for(anext(spectator.changes()), TIMEOUT)


async def test_connect_with_a_token_acts_as_its_subject() -> None:
    """connect(..., token=...) sends the token; the token's subject is the client id."""
    async with running_server(auth="jwt", jwt_secret=SECRET) as server:
        url = server.room_url("lobby")
        async with connect(url, token=token(sub="bot-7", rooms=["lobby"])) as room:
            assert room.client_id == "bot-7"
            assert await room.act("patch", [[0, ["by"], "bot-7"]]) == 1
        with pytest.raises(ServerClosed) as closed:
            async with connect(url, token=token(rooms=["other-*"])):
                pass
        assert closed.value.code == 4003


async def test_connect_with_several_urls_moves_on_from_a_node_that_is_down(
    server: RunningServer,
) -> None:
    """Given a cluster's URLs and no load balancer, connect() tries the next URL when one is
    unreachable, and comes back round the list when that connection ends."""
    from tests.redis_server import free_port

    dead = f"ws://127.0.0.1:{free_port()}/rooms/api-urls"
    live = server.room_url("api-urls")
    async with connect([dead, live], client="a") as agent:
        assert agent.url == live
        assert await agent.act("patch", [[0, ["n"], 1]]) == 1
        await agent.drop_connection()  # round the list: the dead node, then this one again
        assert await agent.act("patch", [[0, ["n"], 2]]) == 2
        assert agent.url == live
        assert agent.connections == 2


async def test_connect_to_a_port_where_nothing_listens_fails_saying_so() -> None:
    from statecast import ConnectFailed
    from tests.redis_server import free_port

    url = f"ws://127.0.0.1:{free_port()}/rooms/nobody"
    with pytest.raises(ConnectFailed) as failed:
        async with connect(url, client="a", connect_timeout=0.5):
            pass
    assert "connection refused (nothing listens there)" in str(failed.value)
    assert url in str(failed.value)


async def test_connect_to_a_wrong_path_fails_with_the_servers_answer(
    server: RunningServer,
) -> None:
    from statecast import ConnectFailed

    with pytest.raises(ConnectFailed) as failed:
        async with connect(f"{server.ws_url}/room/typo", client="a"):
            pass
    assert "HTTP 404: no such endpoint: use /rooms/{room}" in str(failed.value)


async def test_status_follows_the_connection_and_can_be_waited_for(server: RunningServer) -> None:
    url = server.room_url("api-status")
    async with connect(url, client="a") as agent:
        assert agent.status == "live"
        await agent.drop_connection()
        assert await agent.wait_for_status("reconnecting", timeout=TIMEOUT) == "reconnecting"
        assert await agent.wait_for_status("live", timeout=TIMEOUT) == "live"
        assert agent.connections == 2
    assert agent.status == "closed"


async def test_act_with_a_timeout_raises_timeout_and_the_action_still_counts_once() -> None:
    """A server that WELCOMEs and never answers: act(timeout=) raises TimeoutError, and the
    action stays pending (re-sent with its aid on the next connection)."""
    import msgpack
    import websockets

    frames: list[list[object]] = []

    async def silent(ws: websockets.ServerConnection) -> None:
        async for frame in ws:
            unpacker = msgpack.Unpacker(raw=False)
            unpacker.feed(frame)
            for message in unpacker:
                frames.append(message)
                if message[0] == 1:
                    welcome = {"epoch": "e", "seq": 0, "role": "agent", "client": "a"}
                    welcome |= {"acked": 0, "sync": "snapshot"}
                    await ws.send(msgpack.packb([2, welcome]) + msgpack.packb([3, "e", 0, {}]))

    async with websockets.serve(silent, "127.0.0.1", 0) as ws_server:
        port = ws_server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/rooms/r", client="a") as agent:
            with pytest.raises(TimeoutError):
                await agent.act("patch", [[0, ["x"], 1]], timeout=0.2)
            assert agent.sync.pending == [1]
            assert [m[0] for m in frames] == [1, 4]


async def test_an_action_over_the_servers_limit_is_refused_here_and_the_session_goes_on() -> None:
    """WELCOME says the server's message limit; a larger action is Rejection("too_large")
    naming it, sent nowhere, instead of a 1009 that would end the session."""
    async with (
        running_server(max_message_bytes=64 * 1024) as server,
        connect(server.room_url("api-big"), client="a") as agent,
    ):
        assert agent.max_message == 64 * 1024
        with pytest.raises(Rejection) as refused:
            await agent.act("patch", [[0, ["big"], "x" * 70_000]])
        assert refused.value.code == "too_large" and "65536" in refused.value.message
        assert agent.sync.pending == []
        assert await agent.act("patch", [[0, ["small"], 1]]) == 1
        assert agent.connections == 1

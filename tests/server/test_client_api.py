"""The public client, ``from statecast import connect``, as the README uses it, on a real server."""

from __future__ import annotations

import asyncio

import pytest

from statecast import Rejection, connect
from statecast.protocol.errors import ServerClosed
from statecast.protocol.sync import Changed
from tests.helpers import TIMEOUT, RunningServer, running_server
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

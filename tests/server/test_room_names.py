"""Room names follow one rule everywhere, and a spectator never creates a room."""

from __future__ import annotations

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from statecast import ServerClosed, connect
from statecast.protocol.rooms import ROOM_NAME_RULE, room_name_problem
from tests.helpers import RunningServer, bare, http_session


@pytest.mark.parametrize("name", ["lobby", "a", "game-1.v2_x", "x" * 128, ".a", "a.."])
def test_good_names(name: str) -> None:
    assert room_name_problem(name) is None


@pytest.mark.parametrize("name", ["", ".", "..", "a b", "x" * 129, "é", "a/b", "a%2Fb"])
def test_bad_names_are_refused_with_the_rule(name: str) -> None:
    problem = room_name_problem(name)
    assert problem is not None and ROOM_NAME_RULE in problem


@pytest.mark.parametrize("name", ["..", ".", "a%20b"])
async def test_a_bad_name_is_refused_over_websocket_naming_the_rule(
    server: RunningServer, name: str
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(f"{server.ws_url}/rooms/{name}"):
            pass
    assert refused.value.response.status_code == 404  # any other path, as §4.1 says
    assert ROOM_NAME_RULE in refused.value.response.body.decode()


async def test_a_bad_name_is_refused_over_http_and_on_the_watch_page(
    server: RunningServer,
) -> None:
    async with http_session() as http:
        async with http.get(f"{server.http_url}/rooms/a%20b/state") as response:
            body = await response.json()
            assert response.status == 400 and body["code"] == "invalid"
            assert ROOM_NAME_RULE in body["message"]
        async with http.post(f"{server.http_url}/rooms/a%20b/actions", json={}) as response:
            assert response.status == 400
        async with http.get(f"{server.http_url}/rooms/a%20b/watch") as response:
            assert response.status == 400
            assert response.content_type == "text/html"
            assert "Bad room name" in await response.text()


async def test_a_spectator_never_creates_a_room(server: RunningServer) -> None:
    """A mistyped room name: 4004 naming the room for a spectator (raw and the Python
    client alike), an HTML 404 on the watch page, and still no room afterwards."""
    async with bare(server.room_url("typo")) as spectator:
        await spectator.send([1, {"v": 1, "role": "spectator"}])
        assert await spectator.closed() == 4004
        assert "no room 'typo'" in (spectator.ws.close_reason or "")
    with pytest.raises(ServerClosed) as closed:
        async with connect(server.room_url("typo"), role="spectator"):
            pass
    assert closed.value.code == 4004
    async with http_session() as http:
        async with http.get(f"{server.http_url}/rooms/typo/watch") as response:
            assert response.status == 404 and response.content_type == "text/html"
            assert "There is no room" in await response.text()
        async with http.get(f"{server.http_url}/rooms/typo") as response:
            assert response.status == 404
    async with connect(server.room_url("typo"), client="a") as agent:  # an agent creates it
        assert agent.seq == 0
    async with connect(server.room_url("typo"), role="spectator") as spectator:
        assert spectator.state == {}

"""The example grid room, registered by pattern, over real WebSocket connections."""

from __future__ import annotations

import subprocess
import sys

import pytest

from statecast.server.registry import RoomTypes
from statecast.server.rooms.document import DocumentRoom
from statecast.server.rooms.grid import GridRoom
from tests.helpers import BareClient, bare, running_server

GRID = ("grid-*=statecast.server.rooms.grid:GridRoom",)


async def _agent(client: BareClient, name: str) -> None:
    await client.hello("agent", client=name)
    await client.recv_type(3)


async def _act(client: BareClient, aid: int, name: str, args: object) -> list[object]:
    """Send one action and return its ACK or ERROR (skipping DIFFs)."""
    await client.send([4, aid, name, args])
    while True:
        message = await client.recv()
        if message[0] in (7, 8) and message[1] == aid:
            return message


async def test_grid_room_enforces_its_rules() -> None:
    """Agents join free cells, move one cell, and are refused off the board or into others."""
    async with running_server(room_types=GRID) as srv:
        url = srv.room_url("grid-1")
        async with bare(url) as a, bare(url) as b:
            await _agent(a, "a")
            await _agent(b, "b")
            assert (await _act(a, 1, "join", {"x": 0, "y": 0}))[0] == 7
            assert await _act(b, 1, "join", {"x": 0, "y": 0}) == [
                8,
                1,
                "conflict",
                "(0, 0) is occupied",
            ]
            assert (await _act(b, 2, "join", {"x": 1, "y": 0}))[0] == 7
            assert (await _act(a, 2, "move", "n"))[2] == "invalid"  # off the board
            assert (await _act(a, 3, "move", "e"))[2] == "conflict"  # b is there
            assert (await _act(a, 4, "move", "up"))[2] == "invalid"
            assert (await _act(a, 5, "teleport", None))[2] == "unknown_action"
            ack = await _act(a, 6, "move", "s")
            assert ack[0] == 7
            live = srv.app.rooms.rooms["grid-1"]
            assert live.feed.state["agents"] == {
                "a": {"x": 0, "y": 1},
                "b": {"x": 1, "y": 0},
            }
            assert live.feed.head == ack[2] == 3  # two joins, then one move (one diff of two ops)
            async with bare(url) as c:
                await _agent(c, "c")
                assert (await _act(c, 1, "join", None))[0] == 7  # the first free cell
                assert live.writer.room.state["agents"]["c"] == {"x": 0, "y": 0}
                assert (await _act(c, 2, "join", None))[2] == "conflict"  # already placed


async def test_only_matching_rooms_get_the_registered_type() -> None:
    """A room no pattern claims is a document room."""
    types = RoomTypes.parse(GRID)
    assert types.for_room("grid-7") is GridRoom
    assert types.for_room("lobby") is DocumentRoom


def test_bad_room_type_spec_is_refused() -> None:
    """A malformed or unloadable --room-type is a ValueError, and serve exits 2 with it."""
    for spec in ("nopattern", "x=no.such.module:Room", "x=statecast.server.rooms.grid:Nope"):
        with pytest.raises(ValueError):
            RoomTypes.parse([spec])
    result = subprocess.run(
        [sys.executable, "-m", "statecast.server", "serve", "--store", "memory", "--port", "0",
         "--http-port", "0", "--room-type", "x=no.such.module:Room"],
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "cannot be loaded" in result.stderr

"""The generators' counted sockets against a real server."""

from __future__ import annotations

import asyncio
import json

from statecast.loadtest.measure import Counters
from statecast.loadtest.runner import set_up_room
from statecast.loadtest.wire import HttpConnection, open_websocket
from tests.helpers import TIMEOUT, RunningServer, make_room


async def test_http_connection_polls_with_etag_and_counts_every_byte(server: RunningServer) -> None:
    """A POST creates the room, a GET returns it with an ETag, the same GET again is a 304."""
    counters = Counters()
    http = HttpConnection(server.http_url, counters)
    body = json.dumps({"client": "c", "aid": 1, "name": "patch", "args": [[0, ["k"], 1]]})
    headers = [("Content-Type", "application/json")]
    status, _, answer = await http.request("POST", "/rooms/w/actions", headers, body.encode())
    assert status == 200 and json.loads(answer) == {"seq": 1}
    status, headers, answer = await http.request("GET", "/rooms/w/state")
    assert status == 200 and json.loads(answer)["state"] == {"k": 1}
    etag = headers["etag"]
    sent, received = counters.up, counters.down
    status, _, answer = await http.request("GET", "/rooms/w/state", [("If-None-Match", etag)])
    assert status == 304 and answer == b""
    assert counters.up - sent > len("GET /rooms/w/state HTTP/1.1\r\n")
    assert counters.down - received > len("HTTP/1.1 304 Not Modified\r\n")
    http.close()


async def test_counted_websocket_counts_handshake_and_frames(server: RunningServer) -> None:
    """Handshake bytes count both ways, and a binary message reaches the callback synchronously."""
    counters = Counters()
    await make_room(server, "w")
    ws = await open_websocket(server.room_url("w"), counters, TIMEOUT)
    assert counters.up > 100 and counters.down > 100  # the HTTP upgrade, both ways
    got: asyncio.Queue[bytes] = asyncio.Queue()
    ws.on_message = got.put_nowait
    ws.send_now(b"\x92\x01\x82\xa1v\x01\xa4role\xa9spectator")  # HELLO as a spectator
    welcome = await asyncio.wait_for(got.get(), TIMEOUT)
    assert welcome[:2] == b"\x92\x02"
    assert counters.frames_up == 1 and counters.frames_down >= 1
    await ws.close()


async def test_entities_are_set_up_as_a_world_that_polling_pays_for(server: RunningServer) -> None:
    """--entities N puts N never-changing entries under 'world' before the run."""
    await set_up_room(server.http_url, "world", 1500)
    counters = Counters()
    http = HttpConnection(server.http_url, counters)
    status, _, answer = await http.request("GET", "/rooms/world/state")
    assert status == 200
    world = json.loads(answer)["state"]["world"]
    assert len(world) == 1500 and world["e1499"]["hp"] == 100
    assert counters.down > 1500 * 30  # every poll carries the whole world
    http.close()

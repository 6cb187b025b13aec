"""``statecast mcp --http PORT``: the same seat over MCP's Streamable HTTP, for hosts that
connect by URL, against a real ``statecast serve``."""

from __future__ import annotations

import asyncio
import json
import warnings

import mcp_types as types
from mcp.shared.exceptions import MCPDeprecationWarning

from statecast import connect
from tests.helpers import TIMEOUT, http_session
from tests.mcp.harness import CREW_TYPE, EXAMPLES, http_agent, http_seat, readable, seat_args
from tests.serve_process import serve_process


async def test_the_seat_over_streamable_http() -> None:
    async with (
        asyncio.timeout(TIMEOUT * 8),
        serve_process("--room-type", CREW_TYPE, cwd=EXAMPLES) as server,
        http_seat(*seat_args(server, "crew-http", "a")) as seat,
    ):
        assert seat.url.startswith("http://127.0.0.1:") and seat.url.endswith("/mcp")
        async with http_agent(seat.url) as agent:
            tools = {tool.name for tool in (await agent.session.list_tools()).tools}
            assert {"add_task", "claim", "finish", "get_state", "changes_since"} <= tools
            added = await agent.call("add_task", title="over http")
            assert added["seq"] == 1 and added["answer"] == "t1"
            state = await agent.call("get_state")
            async with http_session() as http:
                url = f"{server.http_url}/rooms/crew-http/state"
                async with http.get(url) as response:
                    assert state == await response.json()
            uri = (await agent.session.list_resources()).resources[0].uri
            with warnings.catch_warnings():  # the 2025 way, which the SDK marks as old
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                await agent.session.subscribe_resource(uri)
            async with connect(server.room_url("crew-http"), client="b") as other:
                await other.call("claim", {"task": "t1"})
                await agent.updated(uri)
            read = (await agent.session.read_resource(uri)).contents[0]
            assert isinstance(read, types.TextResourceContents)
            assert json.loads(read.text)["state"]["tasks"]["t1"]["owner"] == "b"
            net = await agent.call("changes_since", seq=1)
            epoch = state["epoch"]
            async with http_session() as http:
                url = f"{server.http_url}/rooms/crew-http/changes"
                params = {"epoch": epoch, "since": "1", "compact": "1"}
                async with http.get(url, params=params) as response:
                    body = await response.json()
            assert net == {"since": 1, "seq": 2, "changes": readable(body["ops"])}
        # A second host connection to the same seat: the same room, the same agent.
        async with http_agent(seat.url) as again:
            info = await again.call("room_info")
            assert info["you"] == "a" and info["seq"] == 2 and info["agents"] == ["a"]

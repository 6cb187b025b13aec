"""A second real MCP client: the MCP Inspector's CLI mode (npm ``@modelcontextprotocol/inspector``,
pinned in tests/mcp/inspector/ and installed there by ``make pytest``) launches
``statecast mcp`` over stdio, lists its tools and calls one."""

from __future__ import annotations

import asyncio
import json
import shutil
from typing import Any

from tests.helpers import TIMEOUT, http_session
from tests.mcp.harness import CREW_TYPE, EXAMPLES, ROOT, seat_args
from tests.serve_process import STATECAST, run_to_end, serve_process

INSPECTOR = ROOT / "tests" / "mcp" / "inspector" / "node_modules" / ".bin" / "mcp-inspector"


async def inspect(*args: str) -> dict[str, Any]:
    """Run the Inspector's CLI mode; its JSON answer (it must exit 0)."""
    assert shutil.which("node"), "Node.js is missing: the MCP Inspector needs it (make system-deps)"
    assert INSPECTOR.exists(), (
        f"{INSPECTOR} is missing: install the MCP Inspector with `make inspector` "
        "(npm ci in tests/mcp/inspector)"
    )
    # The Inspector starts statecast mcp in its own directory: examples/, where the room
    # type's package is, as a host configured for it would.
    code, out, err = await run_to_end(
        str(INSPECTOR), "--cli", str(STATECAST), *args, cwd=EXAMPLES, timeout=TIMEOUT * 6
    )
    assert code == 0, f"the Inspector exited {code}: {out}\n{err}"
    answer: dict[str, Any] = json.loads(out)
    return answer


async def test_the_inspector_lists_the_tools_and_calls_one() -> None:
    async with (
        asyncio.timeout(TIMEOUT * 16),
        serve_process("--room-type", CREW_TYPE, cwd=EXAMPLES) as server,
    ):
        seat = seat_args(server, "crew-inspector", "inspector")
        listed = await inspect(*seat, "--method", "tools/list")
        tools = {tool["name"]: tool for tool in listed["tools"]}
        assert {"add_task", "claim", "finish", "get_state", "changes_since", "room_info"} <= set(
            tools
        )
        assert tools["add_task"]["description"].startswith("Add a task to the board")
        assert tools["add_task"]["inputSchema"]["required"] == ["title"]
        called = await inspect(
            *seat,
            "--method",
            "tools/call",
            "--tool-name",
            "add_task",
            "--tool-arg",
            "title=from the inspector",
        )
        assert called.get("isError") is not True, called
        assert called["structuredContent"]["answer"] == "t1"
        assert called["structuredContent"]["seq"] == 1
        async with http_session() as http:
            url = f"{server.http_url}/rooms/crew-inspector/state"
            async with http.get(url) as response:
                state = (await response.json())["state"]
        assert state["tasks"] == {
            "t1": {"title": "from the inspector", "owner": None, "done": False, "result": None}
        }

"""What goes wrong reaches the model as a clear tool error, never a hang: an unknown
room, a refused token, the statecast server unreachable; and the command line says
what is wrong with its flags, or that the MCP extra is missing."""

from __future__ import annotations

import ast
import asyncio
import socket
import sys
import time

import jwt
import mcp_types as types

from tests.helpers import TIMEOUT
from tests.mcp.harness import CREW_TYPE, EXAMPLES, ROOT, seat_args, stdio_agent
from tests.serve_process import STATECAST, run_to_end, serve_process

SECRET = "statecast-test-secret-0123456789abcdef"
READERS = {"get_state", "changes_since", "wait_for_change", "room_info"}


def token(rooms: list[str], key: str = SECRET, role: str = "agent") -> str:
    claims = {"sub": "a", "role": role, "rooms": rooms, "exp": int(time.time()) + 600}
    return jwt.encode(claims, key, algorithm="HS256")


async def test_an_unknown_room_is_a_tool_error() -> None:
    async with (
        asyncio.timeout(TIMEOUT * 6),
        serve_process("--no-create-rooms", cwd=EXAMPLES) as server,
        stdio_agent(*seat_args(server, "nowhere", "a", "--connect-timeout", "2")) as agent,
    ):
        # The host still gets its tools: the readers, each saying what is wrong.
        tools = {tool.name for tool in (await agent.session.list_tools()).tools}
        assert tools == READERS
        for tool, arguments in (("get_state", {}), ("room_info", {})):
            error = await agent.error(tool, **arguments)
            assert error["code"] == "closed_4004", error
            assert "the room does not exist" in error["message"]
            assert "check --room" in error["message"]


async def test_a_refused_token_is_a_tool_error_and_a_good_one_works() -> None:
    auth = ("--auth", "jwt", "--jwt-secret", SECRET, "--room-type", CREW_TYPE)
    async with asyncio.timeout(TIMEOUT * 8), serve_process(*auth, cwd=EXAMPLES) as server:
        forged = token(["crew-*"], key="another-secret-0123456789abcdefghij")
        args = seat_args(server, "crew-auth", "a", "--token", forged, "--connect-timeout", "2")
        async with stdio_agent(*args) as agent:
            error = await agent.error("get_state")
            assert error["code"] == "closed_4001", error
            assert "refused the token" in error["message"]
            assert "--token" in error["message"]
            # An action's tool is not known without the room, and the call says why.
            assert (await agent.error("add_task", title="x"))["code"] == "closed_4001"
        other_room = token(["elsewhere-*"])
        args = seat_args(server, "crew-auth", "a", "--token", other_room, "--connect-timeout", "2")
        async with stdio_agent(*args) as agent:
            error = await agent.error("room_info")
            assert error["code"] == "closed_4003", error
            assert "does not allow this room" in error["message"]
        args = seat_args(server, "crew-auth", "a", "--token", token(["crew-*"]))
        async with stdio_agent(*args) as agent:
            assert (await agent.call("add_task", title="x"))["answer"] == "t1"
            info = await agent.call("room_info")  # over HTTP, with the token
            assert info["type"] == "mypackage.agents:TaskBoard"
            assert (await agent.call("changes_since", seq=0))["seq"] == 1
        reader = token(["crew-*"], role="spectator")
        args = seat_args(server, "crew-auth", "r", "--token", reader, "--role", "spectator")
        async with stdio_agent(*args) as agent:
            assert (await agent.call("get_state"))["state"]["tasks"]["t1"]["title"] == "x"
            refused = await agent.error("add_task", title="y")
            assert refused["code"] == "forbidden"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_server_is_a_tool_error_until_it_comes() -> None:
    port, http_port = free_port(), free_port()  # nothing listens there, yet
    args = (
        "mcp", "--url", f"ws://127.0.0.1:{port}", "--http-url", f"http://127.0.0.1:{http_port}",
        "--room", "crew-1", "--client", "a", "--connect-timeout", "1",
    )  # fmt: skip
    async with asyncio.timeout(TIMEOUT * 8), stdio_agent(*args) as agent:
        assert {tool.name for tool in (await agent.session.list_tools()).tools} == READERS
        for tool, arguments in (
            ("get_state", {}),
            ("changes_since", {"seq": 0}),
            ("wait_for_change", {"seq": 0}),
            ("room_info", {}),
        ):
            error = await agent.error(tool, **arguments)
            assert error["code"] == "unreachable", error
            assert f"cannot reach the statecast server at ws://127.0.0.1:{port}" in error["message"]
            assert "connection refused" in error["message"]
        # The server comes: the seat connects by itself and tells the host its tools changed.
        ports = (f"--port={port}", f"--http-port={http_port}", "--room-type", CREW_TYPE)
        async with serve_process(*ports, cwd=EXAMPLES):
            while not isinstance(await agent.notes.get(), types.ToolListChangedNotification):
                pass
            tools = {tool.name for tool in (await agent.session.list_tools()).tools}
            assert tools == READERS | {"add_task", "claim", "finish"}
            assert (await agent.call("add_task", title="at last"))["answer"] == "t1"


async def test_the_command_line_says_what_is_wrong() -> None:
    cases = [
        (
            ["--url", "http://127.0.0.1:1"],
            "--url 'http://127.0.0.1:1' is not a ws:// or wss:// URL",
        ),
        (["--url", "ws://h", "--http", "70000"], "--http 70000 is not a port"),
        (["--url", "ws://h", "--call-timeout", "0"], "--call-timeout 0 must be above 0"),
        (["--url", "ws://h", "--keys", "/proc/no/such/keys.sqlite"], "--keys /proc/no/such/"),
        (["--url", "ws://h", "--view", "board"], "--view is a list of 1 to 64 path prefixes"),
    ]
    for flags, message in cases:
        code, _, err = await run_to_end(
            str(STATECAST), "mcp", "--room", "r", "--client", "c", *flags,
            cwd=EXAMPLES, timeout=TIMEOUT * 2,
        )  # fmt: skip
        assert code == 2 and message in err, (flags, err)


async def test_without_the_mcp_extra_the_command_says_how_to_install_it() -> None:
    """The SDK is hidden from the import system, as in an install without the extra; the
    command is still registered (registering imports nothing of the SDK)."""
    script = (
        "import sys; sys.modules['mcp'] = None\n"
        "from statecast.server.cli import build_parser, main\n"
        "build_parser()\n"
        "assert 'mcp_types' not in sys.modules, 'registering imported the SDK'\n"
        "raise SystemExit(main(['mcp', '--url', 'ws://h:1', '--room', 'r', '--client', 'c']))\n"
    )
    code, _, err = await run_to_end(sys.executable, "-c", script, cwd=EXAMPLES, timeout=TIMEOUT * 2)
    assert code == 2, err
    assert err == "statecast mcp needs the MCP SDK: pip install 'statecast[mcp]'\n"


def test_the_core_never_imports_the_mcp_server_or_the_sdk() -> None:
    """server/ and protocol/ import neither statecast.mcp_server nor the MCP SDK."""
    offenders = []
    for folder in ("server", "protocol"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                offenders += [
                    f"{path}: {n}"
                    for n in names
                    if n.split(".")[0] in ("mcp", "mcp_types") or "mcp_server" in n.split(".")
                ]
    assert offenders == []

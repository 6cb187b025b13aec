"""``statecast mcp`` as an agent host runs it, and the official MCP client talking to it.

Over stdio the installed ``statecast`` script is launched by the SDK's ``stdio_client``
(as a host launches it); over Streamable HTTP it runs as a process of its own and the
SDK's ``streamable_http_client`` connects by URL. Either way the statecast server is a
real ``statecast serve`` (tests/serve_process.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mcp_types as types
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from tests.helpers import TIMEOUT
from tests.serve_process import STATECAST, ServeProcess

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
#: The example room type written for agents (examples/mypackage/agents.py).
CREW_TYPE = "crew-*=mypackage.agents:TaskBoard"


def seat_args(server: ServeProcess, room: str, client: str, *extra: str) -> list[str]:
    """``statecast mcp``'s arguments for a seat in ``room`` of ``server``."""
    return [
        "mcp",
        "--url", server.ws_url,
        "--http-url", server.http_url,
        "--room", room,
        "--client", client,
        *extra,
    ]  # fmt: skip


@dataclass
class Agent:
    """An MCP client session, and every notification the server sent it."""

    session: ClientSession
    notes: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)

    async def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        """Call ``tool``; its structured result (the call must succeed)."""
        result = await self.session.call_tool(tool, arguments)
        assert not result.is_error, f"{tool} failed: {result.content}"
        text = result.content[0]
        assert isinstance(text, types.TextContent)
        assert json.loads(text.text) == result.structured_content
        assert isinstance(result.structured_content, dict)
        return result.structured_content

    async def error(self, tool: str, **arguments: Any) -> dict[str, Any]:
        """Call ``tool``, which must answer a tool error; the error (code, message, ...)."""
        result = await self.session.call_tool(tool, arguments)
        assert result.is_error, f"{tool} did not fail: {result.structured_content}"
        text = result.content[0]
        assert isinstance(text, types.TextContent)
        assert isinstance(result.structured_content, dict)
        error: dict[str, Any] = result.structured_content["error"]
        assert text.text == f"{error['code']}: {error['message']}"
        return error

    async def updated(self, uri: str, timeout: float = TIMEOUT) -> None:
        """Wait for a resources/updated notification for ``uri``."""
        async with asyncio.timeout(timeout):
            while True:
                note = await self.notes.get()
                if isinstance(note, types.ResourceUpdatedNotification) and note.params.uri == uri:
                    return


@contextlib.asynccontextmanager
async def stdio_agent(*args: str, cwd: Path = EXAMPLES, era: str = "2025") -> AsyncIterator[Agent]:
    """``statecast ARGS`` launched over stdio by the SDK; a session to it, initialized as
    a 2025 host does (``initialize``) or as a 2026-07-28 one does (``server/discover``)."""
    # The seat's log goes to a file (the SDK hands the process a real descriptor).
    with tempfile.TemporaryFile("w+") as errlog:
        params = StdioServerParameters(command=str(STATECAST), args=list(args), cwd=cwd)
        notes: asyncio.Queue[Any] = asyncio.Queue()

        async def handler(message: Any) -> None:
            notes.put_nowait(message)

        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write, message_handler=handler) as session,
        ):
            start = session.initialize() if era == "2025" else session.discover()
            await asyncio.wait_for(start, TIMEOUT * 2)
            yield Agent(session, notes)


@dataclass
class HttpSeat:
    """``statecast mcp --http 0`` running as a process of its own."""

    proc: asyncio.subprocess.Process
    url: str
    log: list[dict[str, Any]]


@contextlib.asynccontextmanager
async def http_seat(*args: str, cwd: Path = EXAMPLES) -> AsyncIterator[HttpSeat]:
    """``statecast ARGS --http 0``; once it serves, its MCP endpoint's URL. Killed after."""
    proc = await asyncio.create_subprocess_exec(
        str(STATECAST), *args, "--http", "0",
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    log: list[dict[str, Any]] = []
    serving: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def read(stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"event": raw.decode(errors="replace").rstrip()}
            log.append(line)
            if line.get("event") == "mcp_serving" and not serving.done():
                serving.set_result(str(line["url"]))
        if not serving.done():
            serving.set_exception(RuntimeError(f"statecast mcp exited before serving: {log}"))

    reader = asyncio.create_task(read(proc.stderr))
    try:
        url = await asyncio.wait_for(serving, TIMEOUT * 4)
        yield HttpSeat(proc, url, log)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


@contextlib.asynccontextmanager
async def http_agent(url: str) -> AsyncIterator[Agent]:
    """An initialized MCP session over Streamable HTTP to ``url``."""
    notes: asyncio.Queue[Any] = asyncio.Queue()

    async def handler(message: Any) -> None:
        notes.put_nowait(message)

    async with (
        streamable_http_client(url) as (read, write),
        ClientSession(read, write, message_handler=handler) as session,
    ):
        await asyncio.wait_for(session.initialize(), TIMEOUT * 2)
        yield Agent(session, notes)


def readable(wire_ops: list[Any]) -> list[dict[str, Any]]:
    """The HTTP net change's ops as changes_since states them (docs/agents.md)."""
    return [
        {"path": op[1], "removed": True} if op[0] == 1 else {"path": op[1], "value": op[2]}
        for op in wire_ops
    ]

"""Exactly once through MCP: the statecast server killed and restarted (SQLite) between
tool calls and under a pending one, and a call retried with the same key after its MCP
connection was cut. Every action is applied once: the room's ``next`` counter and its
tasks say how many ``add_task`` actions took effect."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.helpers import TIMEOUT, eventually, http_session
from tests.mcp.harness import CREW_TYPE, EXAMPLES, http_agent, http_seat, seat_args, stdio_agent
from tests.serve_process import ServeProcess, serve_process, start_serve


@asynccontextmanager
async def sqlite_server(tmp_path: Path) -> AsyncIterator[list[ServeProcess]]:
    """A SQLite-backed ``statecast serve``; ``restart`` it through :func:`restart`. The
    list holds the running process (the last one), killed when the block ends."""
    store = f"--store=sqlite:{tmp_path / 'rooms.sqlite'}"
    servers = [await start_serve("--room-type", CREW_TYPE, store, cwd=EXAMPLES)]
    try:
        yield servers
    finally:
        for server in servers:
            if server.proc.returncode is None:
                server.proc.kill()
            await server.proc.wait()


async def kill(servers: list[ServeProcess]) -> None:
    """SIGKILL: no graceful close, the clients see their connections drop."""
    assert await servers[-1].stop(signal.SIGKILL) == -signal.SIGKILL


async def restart(servers: list[ServeProcess], tmp_path: Path) -> None:
    """Start the server again on the same ports and the same store."""
    first = servers[0]
    ports = (
        f"--port={urlsplit(first.ws_url).port}",
        f"--http-port={urlsplit(first.http_url).port}",
    )
    store = f"--store=sqlite:{tmp_path / 'rooms.sqlite'}"
    servers.append(await start_serve("--room-type", CREW_TYPE, store, *ports, cwd=EXAMPLES))


async def state(server: ServeProcess, room: str) -> dict[str, Any]:
    async with http_session() as http, http.get(f"{server.http_url}/rooms/{room}/state") as r:
        assert r.status == 200, await r.text()
        body: dict[str, Any] = (await r.json())["state"]
        return body


async def test_the_server_killed_and_restarted_between_and_under_tool_calls(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(TIMEOUT * 12), sqlite_server(tmp_path) as servers:
        args = seat_args(servers[0], "crew-restart", "a", "--call-timeout", str(TIMEOUT * 4))
        async with stdio_agent(*args) as agent:
            assert (await agent.call("add_task", title="one"))["answer"] == "t1"
            await kill(servers)
            await restart(servers, tmp_path)
            # The seat's client resumes by itself: the next call is applied once.
            assert (await agent.call("add_task", title="two"))["answer"] == "t2"
            await kill(servers)
            # A call made while the server is down waits for it, and is applied once.
            pending = asyncio.create_task(agent.call("add_task", title="three", key="k3"))
            await restart(servers, tmp_path)
            three = await pending
            assert three["answer"] == "t3"
            again = await agent.call("add_task", title="three", key="k3")
            assert again == {**three, "retried": True}
        room = await state(servers[-1], "crew-restart")
        assert room["next"] == 4
        assert [t["title"] for t in room["tasks"].values()] == ["one", "two", "three"]


async def test_a_retry_with_the_same_key_after_the_connection_was_cut(tmp_path: Path) -> None:
    """Over Streamable HTTP the seat outlives the host's connections: a call that could not
    finish (the statecast server is down) answers that it is pending; its connection is
    then cut; the host comes back on a new connection and retries with the same key after
    the server is back, and gets the first call's outcome, applied once."""
    async with asyncio.timeout(TIMEOUT * 12), sqlite_server(tmp_path) as servers:
        args = seat_args(servers[0], "crew-cut", "a", "--call-timeout", "1", "--log-level", "debug")
        async with http_seat(*args) as seat:
            async with http_agent(seat.url) as agent:
                one = await call_until_settled(agent, "add_task", title="one", key="one")
                assert one["answer"] == "t1"
                await kill(servers)
                pending = await agent.error("add_task", title="two", key="retry-me")
                assert pending["code"] == "pending" and pending["key"] == "retry-me"
                assert "call add_task again with key 'retry-me'" in pending["message"]
                # A second call under way when the connection is cut.
                cut = asyncio.create_task(agent.call("add_task", title="three", key="cut"))
                await eventually(lambda: any(e.get("key") == "cut" for e in seat.log))
            cut.cancel()
            await restart(servers, tmp_path)
            async with http_agent(seat.url) as agent:
                two = await call_until_settled(agent, "add_task", title="two", key="retry-me")
                assert two["answer"] == "t2" and two["retried"] is True
                three = await call_until_settled(agent, "add_task", title="three", key="cut")
                assert three["answer"] == "t3" and three["retried"] is True
                four = await call_until_settled(agent, "add_task", title="four", key="new")
                assert four["answer"] == "t4"
        room = await state(servers[-1], "crew-cut")
        assert room["next"] == 5
        assert [t["title"] for t in room["tasks"].values()] == ["one", "two", "three", "four"]


async def call_until_settled(agent: Any, tool: str, **arguments: Any) -> dict[str, Any]:
    """Retry while the answer is "pending" (the seat's client may still be reconnecting),
    as a host would: every retry carries the same key, so the action is applied once."""
    while True:
        result = await agent.session.call_tool(tool, arguments)
        if not result.is_error:
            assert isinstance(result.structured_content, dict)
            return result.structured_content
        assert result.structured_content["error"]["code"] == "pending", result.content


async def test_a_rate_limited_call_can_be_retried_under_its_key() -> None:
    """A refusal for a passing reason (rate_limited) applied nothing: the key is free
    again, and the retry runs the action (once); any other refusal is the key's outcome."""
    limits = ("--room-type", CREW_TYPE, "--action-rate=0.5", "--action-burst=1")
    async with (
        asyncio.timeout(TIMEOUT * 8),
        serve_process(*limits, cwd=EXAMPLES) as server,
        stdio_agent(*seat_args(server, "crew-rate", "a")) as agent,
    ):
        assert (await agent.call("add_task", title="one", key="one"))["answer"] == "t1"
        refused = await agent.error("add_task", title="two", key="two")
        assert refused["code"] == "rate_limited" and refused["key"] == "two"
        while True:
            await asyncio.sleep(0.5)  # the bucket refills at 0.5 actions/s
            result = await agent.session.call_tool("add_task", {"title": "two", "key": "two"})
            if not result.is_error:
                break
            assert result.structured_content["error"]["code"] == "rate_limited"
        assert result.structured_content["answer"] == "t2"
        await asyncio.sleep(2.5)  # a token again
        claim = await agent.error("claim", task="t9", key="claim")
        # Sent again, it would be refused rate_limited (the bucket is empty): the retry
        # answers the first refusal without sending anything.
        again = await agent.error("claim", task="t9", key="claim")
        assert claim == again and claim["code"] == "invalid"
        state = (await agent.call("get_state"))["state"]
        assert [t["title"] for t in state["tasks"].values()] == ["one", "two"]

"""``statecast mcp --keys FILE``: a retry after the seat's process restarted (a stdio host
relaunching it) still answers the first outcome, and nothing is applied twice: whether
the first process recorded the outcome, ended before sending the action, or ended after
the room applied it but before its answer came back."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from statecast import connect
from tests.helpers import TIMEOUT, http_session
from tests.mcp.harness import CREW_TYPE, EXAMPLES, http_agent, http_seat, seat_args, stdio_agent
from tests.serve_process import ServeProcess, serve_process


async def tasks(server: ServeProcess, room: str) -> list[str]:
    async with http_session() as http, http.get(f"{server.http_url}/rooms/{room}/state") as r:
        state: dict[str, Any] = (await r.json())["state"]
    return [task["title"] for task in state["tasks"].values()]


async def processed(server: ServeProcess, room: str, client: str, aid: int) -> None:
    """Wait until the room has processed ``client``'s action ``aid`` (its record says so)."""
    url = f"{server.http_url}/rooms/{room}/clients/{client}"
    async with http_session() as http:
        while True:
            async with http.get(url) as r:
                if (await r.json())["acked"] >= aid:
                    return
            await asyncio.sleep(0.05)


async def test_a_retry_in_a_new_process_answers_the_recorded_outcome(tmp_path: Path) -> None:
    keys = ("--keys", str(tmp_path / "keys.sqlite"))
    async with (
        asyncio.timeout(TIMEOUT * 8),
        serve_process("--room-type", CREW_TYPE, cwd=EXAMPLES) as server,
    ):
        args = seat_args(server, "crew-keys", "a", *keys)
        async with stdio_agent(*args) as agent:
            first = await agent.call("add_task", title="one", key="k1")
            refused = await agent.error("claim", task="t9", key="k2")
        async with stdio_agent(*args) as agent:  # the host relaunched it
            assert await agent.call("add_task", title="one", key="k1") == {**first, "retried": True}
            again = await agent.error("claim", task="t9", key="k2")
            assert again == {**refused, "retried": True}
            reused = await agent.error("add_task", title="other", key="k1")
            assert reused["code"] == "key_reused"
        # Without the file, a new process knows nothing of k1: the same call acts again.
        async with stdio_agent(*seat_args(server, "crew-keys", "a")) as agent:
            assert (await agent.call("add_task", title="one", key="k1"))["answer"] == "t2"
        assert await tasks(server, "crew-keys") == ["one", "one"]


class ReplyTrap:
    """A TCP proxy in front of the statecast server that swallows one direction while
    ``trapping`` names it: "replies" (the room applies an action and its ACK never
    arrives) or "requests" (the action never reaches the room)."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.trapping: str | None = None
        self.port = 0

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: bool
    ) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while chunk := await reader.read(65536):
                if self.trapping == ("requests" if up else "replies"):
                    continue
                writer.write(chunk)
                await writer.drain()
        writer.close()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        await asyncio.gather(
            self._pipe(reader, up_writer, True), self._pipe(up_reader, writer, False)
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ReplyTrap]:
        server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()


async def test_a_retry_in_a_new_process_after_the_first_ended_mid_call(tmp_path: Path) -> None:
    keys = ("--keys", str(tmp_path / "keys.sqlite"), "--call-timeout", "1", "--log-level", "debug")
    async with (
        asyncio.timeout(TIMEOUT * 12),
        serve_process("--room-type", CREW_TYPE, cwd=EXAMPLES) as server,
        ReplyTrap(int(server.ws_url.rsplit(":", 1)[1])).running() as trap,
    ):
        args = seat_args(server, "crew-trap", "a", *keys)
        args[args.index("--url") + 1] = f"ws://127.0.0.1:{trap.port}"
        async with http_seat(*args) as seat, http_agent(seat.url) as agent:
            assert (await agent.call("add_task", title="one", key="k1"))["answer"] == "t1"
            trap.trapping = "replies"  # the room applies what comes next; no answer gets back
            pending = await agent.error("add_task", title="two", key="k2")
            assert pending["code"] == "pending"
            async with connect(server.room_url("crew-trap"), role="spectator") as watcher:
                await watcher.wait_for_seq(2)  # the room applied it
            seat.proc.send_signal(signal.SIGKILL)  # ends before it learns the outcome
        trap.trapping = None
        assert await tasks(server, "crew-trap") == ["one", "two"]  # applied, once
        async with http_seat(*args) as seat, http_agent(seat.url) as agent:
            two = await agent.call("add_task", title="two", key="k2")
            assert two["answer"] == "t2" and two["retried"] is True
            three = await agent.call("add_task", title="three", key="k3")
            assert three["answer"] == "t3"
        assert await tasks(server, "crew-trap") == ["one", "two", "three"]


async def test_a_retry_in_a_new_process_of_an_action_never_sent(tmp_path: Path) -> None:
    keys = ("--keys", str(tmp_path / "keys.sqlite"), "--call-timeout", "1")
    async with (
        asyncio.timeout(TIMEOUT * 12),
        serve_process("--room-type", CREW_TYPE, cwd=EXAMPLES) as server,
        ReplyTrap(int(server.ws_url.rsplit(":", 1)[1])).running() as trap,
    ):
        args = seat_args(server, "crew-lost", "a", *keys)
        args[args.index("--url") + 1] = f"ws://127.0.0.1:{trap.port}"
        async with http_seat(*args) as seat, http_agent(seat.url) as agent:
            assert (await agent.call("add_task", title="one", key="k1"))["answer"] == "t1"
            trap.trapping = "requests"  # what comes next never reaches the room
            pending = await agent.error("add_task", title="two", key="k2")
            assert pending["code"] == "pending"
            seat.proc.send_signal(signal.SIGKILL)
        trap.trapping = None
        assert await tasks(server, "crew-lost") == ["one"]
        async with http_seat(*args) as seat, http_agent(seat.url) as agent:
            two = await agent.call("add_task", title="two", key="k2")  # runs now, once
            assert two["answer"] == "t2"
            again = await agent.call("add_task", title="two", key="k2")
            assert again == {**two, "retried": True}
        assert await tasks(server, "crew-lost") == ["one", "two"]


async def test_a_saved_aid_a_later_process_reused_is_not_taken_as_applied(tmp_path: Path) -> None:
    """k2 never reached the room; the next process numbers its own actions from WELCOME's
    acked, so its k3 takes k2's old aid. A retry of k2 in a third process runs it, once,
    and does not answer k3's outcome."""
    keys = ("--keys", str(tmp_path / "keys.sqlite"), "--call-timeout", "1")
    async with (
        asyncio.timeout(TIMEOUT * 12),
        serve_process("--room-type", CREW_TYPE, cwd=EXAMPLES) as server,
        ReplyTrap(int(server.ws_url.rsplit(":", 1)[1])).running() as trap,
    ):
        args = seat_args(server, "crew-aids", "a", *keys)
        args[args.index("--url") + 1] = f"ws://127.0.0.1:{trap.port}"
        async with http_seat(*args) as seat, http_agent(seat.url) as agent:
            assert (await agent.call("add_task", title="one", key="k1"))["answer"] == "t1"
            trap.trapping = "requests"
            assert (await agent.error("add_task", title="two", key="k2"))["code"] == "pending"
            seat.proc.send_signal(signal.SIGKILL)
        trap.trapping = None
        async with http_seat(*args) as seat, http_agent(seat.url) as agent:
            assert (await agent.call("add_task", title="three", key="k3"))["answer"] == "t2"
        async with http_seat(*args) as seat, http_agent(seat.url) as agent:
            two = await agent.call("add_task", title="two", key="k2")
            assert two["answer"] == "t3"
        assert await tasks(server, "crew-aids") == ["one", "three", "two"]


async def test_keys_made_from_request_ids_are_not_kept_for_a_later_process(
    tmp_path: Path,
) -> None:
    """A relaunched stdio host numbers its requests from 1 again: calls without a key in
    the new process are new calls, not the old process's."""
    keys = ("--keys", str(tmp_path / "keys.sqlite"))
    async with (
        asyncio.timeout(TIMEOUT * 8),
        serve_process("--room-type", CREW_TYPE, cwd=EXAMPLES) as server,
    ):
        args = seat_args(server, "crew-implicit", "a", *keys)
        async with stdio_agent(*args) as agent:
            await agent.call("add_task", title="one")
        async with stdio_agent(*args) as agent:
            await agent.call("add_task", title="two")
        assert await tasks(server, "crew-implicit") == ["one", "two"]


async def test_an_action_processed_while_away_is_not_reported_as_applied(
    tmp_path: Path,
) -> None:
    """Its ERROR lost, a refused action is processed all the same: the retry says it was
    processed earlier, applied or refused, never that it was applied."""
    keys = ("--keys", str(tmp_path / "keys.sqlite"), "--call-timeout", "1")
    async with (
        asyncio.timeout(TIMEOUT * 12),
        serve_process("--room-type", CREW_TYPE, cwd=EXAMPLES) as server,
        ReplyTrap(int(server.ws_url.rsplit(":", 1)[1])).running() as trap,
    ):
        args = seat_args(server, "crew-refused", "a", *keys)
        args[args.index("--url") + 1] = f"ws://127.0.0.1:{trap.port}"
        async with http_seat(*args) as seat, http_agent(seat.url) as agent:
            await agent.call("add_task", title="one", key="k1")
            trap.trapping = "replies"  # the room refuses the claim; its ERROR never comes
            assert (await agent.error("claim", task="t9", key="k2"))["code"] == "pending"
            await processed(server, "crew-refused", "a", 2)  # refused: nothing to see
            seat.proc.send_signal(signal.SIGKILL)
        trap.trapping = None
        async with http_seat(*args) as seat, http_agent(seat.url) as agent:
            again = await agent.call("claim", task="t9", key="k2")
            assert "processed earlier" in again["outcome"] and "answer" not in again

"""Durable rooms: a real server process on SQLite, killed (-9) or stopped (SIGTERM), restarted.

Each test runs ``statecast serve --store sqlite:...`` as a subprocess on
free ports (port 0; the ports are read from its JSON ``serving`` log line),
drives it with bare WebSocket agents, stops it, starts a new process on the
same file and checks what the protocol promises across restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets

from statecast.server.app import App
from statecast.server.config import Config
from statecast.server.store.base import StoredChange
from statecast.server.store.sqlite import SQLiteStore
from tests.helpers import TIMEOUT, BareClient, bare, http_session, running_server
from tests.serve_process import ServeProcess, serve_process

ROOT = Path(__file__).resolve().parents[2]
ROOM = "durable"


def server_process(db: Path, *extra: str) -> contextlib.AbstractAsyncContextManager[ServeProcess]:
    """A server process on the SQLite file ``db``, killed at the end unless the test stopped it."""
    flags = ("--action-rate=1000000", "--action-burst=1000000")
    return serve_process(f"--store=sqlite:{db}", *flags, *extra, cwd=ROOT)


@dataclass
class Agent:
    """A bare agent that keeps ``window`` actions in flight, each setting its own key."""

    client: str
    window: int = 8
    sent: int = 0
    acked: dict[int, int] = field(default_factory=dict)  # aid -> seq
    diffs: dict[int, list[Any]] = field(default_factory=dict)  # seq -> ops, as seen
    epoch: str = ""
    close_code: int | None = None
    errors: list[list[Any]] = field(default_factory=list)

    @staticmethod
    def key(client: str, aid: int) -> str:
        return f"{client}/{aid}"

    @property
    def last_seen(self) -> int:
        return max(self.diffs, default=0)

    async def run(self, url: str, stop: asyncio.Event, acked_total: list[int]) -> None:
        """Act until ``stop`` is set or the connection ends (then record its close code)."""
        try:
            async with bare(url) as ws:
                welcome = await ws.hello("agent", client=self.client)
                self.epoch = welcome["epoch"]
                await ws.recv_type(3)
                await self._loop(ws, stop, acked_total)
        except (websockets.ConnectionClosed, OSError) as exc:
            rcvd = getattr(exc, "rcvd", None)
            self.close_code = rcvd.code if rcvd is not None else 1006

    async def _loop(self, ws: BareClient, stop: asyncio.Event, acked_total: list[int]) -> None:
        while True:
            while not stop.is_set() and self.sent - len(self.acked) < self.window:
                self.sent += 1
                op = [0, ["k", self.key(self.client, self.sent)], self.sent]
                await ws.send([4, self.sent, "patch", [op]])
            if stop.is_set() and self.sent == len(self.acked) + len(self.errors):
                return
            message = await ws.recv(TIMEOUT)
            if message[0] == 5:
                self.diffs[message[1]] = message[2]
            elif message[0] == 7:
                self.acked[message[1]] = message[2]
                acked_total[0] += 1
            elif message[0] == 8:
                self.errors.append(message)


async def run_agents(
    url: str, agents: list[Agent], until_acked: int
) -> tuple[asyncio.Event, asyncio.Task[list[None]]]:
    """Start the agents; return once ``until_acked`` actions are acked (they keep going)."""
    stop = asyncio.Event()
    total = [0]
    task = asyncio.gather(*(agent.run(url, stop, total) for agent in agents))
    async with asyncio.timeout(TIMEOUT * 4):
        while total[0] < until_acked:
            if task.done():
                task.result()
                raise AssertionError("the agents ended before the load was reached")
            await asyncio.sleep(0.005)
    return stop, task


async def get_json(url: str) -> Any:
    async with http_session() as http, http.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def check_room(server: ServeProcess, agents: list[Agent]) -> dict[str, Any]:
    """Every acked action is in the state, and each client's acked aid matches the state."""
    body = await get_json(f"{server.http_url}/rooms/{ROOM}/state")
    keys = body["state"].get("k", {})
    for agent in agents:
        client = await get_json(f"{server.http_url}/rooms/{ROOM}/clients/{agent.client}")
        processed = client["acked"]
        assert agent.errors == []
        assert all(aid <= processed for aid in agent.acked), (agent.client, processed)
        for aid in range(1, agent.sent + 1):
            # Every action applies, so "processed" and "in the state" must agree exactly.
            assert (Agent.key(agent.client, aid) in keys) == (aid <= processed), (agent.client, aid)
    return dict(body)


async def test_room_keeps_acting_across_periodic_checkpoints(tmp_path: Path) -> None:
    """A room that reaches checkpoint_every goes on applying and acking actions after it."""
    async with (
        asyncio.timeout(TIMEOUT * 4),  # the failure this guards against is a hang
        running_server(store=f"sqlite:{tmp_path}/x.db", checkpoint_every=3) as server,
        bare(server.room_url(ROOM)) as ws,
    ):
        await ws.hello("agent", client="c")
        await ws.recv_type(3)
        for aid in range(1, 11):
            await ws.send([4, aid, "patch", [[0, ["n"], aid]]])
            assert await ws.recv_type(7) == [7, aid, aid]
    async with running_server(store=f"sqlite:{tmp_path}/x.db") as server:
        body = await get_json(f"{server.http_url}/rooms/{ROOM}/state")
        assert body["seq"] == 10 and body["state"] == {"n": 10}


async def test_kill_9_loses_no_acknowledged_action_and_keeps_the_history(tmp_path: Path) -> None:
    """After kill -9 and a restart, every acked action is there, on the same epoch and seq line."""
    db = tmp_path / "x.db"
    agents = [Agent(f"agent{i}") for i in range(4)]
    async with server_process(db, "--checkpoint-every=40") as first:
        _, load = await run_agents(first.room_url(ROOM), agents, until_acked=300)
        first.proc.kill()  # SIGKILL while actions are in flight
        await first.proc.wait()
        await asyncio.wait_for(load, TIMEOUT)
    assert all(agent.close_code == 1006 for agent in agents)
    epoch = agents[0].epoch
    last_acked = max(seq for agent in agents for seq in agent.acked.values())

    async with server_process(db) as second:
        body = await check_room(second, agents)
        assert body["epoch"] == epoch
        assert body["seq"] >= last_acked
        seen = agents[0]
        since = seen.last_seen - 3
        async with bare(second.room_url(ROOM)) as ws:
            welcome = await ws.hello("spectator", resume=[epoch, since])
            assert welcome["sync"] == "replay" and welcome["epoch"] == epoch
            replayed = [await ws.recv() for _ in range(welcome["seq"] - since)]
        assert [m[1] for m in replayed] == list(range(since + 1, welcome["seq"] + 1))
        for _, seq, ops in replayed:
            if seq in seen.diffs:  # no seq ever names a different diff
                assert ops == seen.diffs[seq]
        async with bare(second.room_url(ROOM)) as ws:
            welcome = await ws.hello("agent", client=seen.client)
            assert welcome["acked"] >= max(seen.acked)
            await ws.recv_type(3)
            await ws.send([4, welcome["acked"] + 1, "patch", [[0, ["after"], 1]]])
            ack = await ws.recv_type(7)
            assert ack == [7, welcome["acked"] + 1, welcome["seq"] + 1]


async def test_sigterm_closes_with_1001_and_restarts_on_the_same_epoch_and_seq(
    tmp_path: Path,
) -> None:
    """SIGTERM tells clients 1001, flushes, and the restarted room resumes where it stopped."""
    db = tmp_path / "x.db"
    agents = [Agent(f"agent{i}", window=2) for i in range(3)]
    async with server_process(db) as first:
        stop, load = await run_agents(first.room_url(ROOM), agents, until_acked=60)
        stop.set()
        await asyncio.wait_for(load, TIMEOUT)
        before = await get_json(f"{first.http_url}/rooms/{ROOM}/head")
        async with bare(first.room_url(ROOM)) as watcher:
            await watcher.hello("spectator")
            await watcher.recv_type(3)
            assert await first.stop(signal.SIGTERM) == 0
            assert await watcher.closed() == 1001
    assert any(line.get("event") == "stopped" for line in first.log)

    async with server_process(db) as second:
        after = await get_json(f"{second.http_url}/rooms/{ROOM}/head")
        assert after == {**before, "oldest": after["oldest"]}
        await check_room(second, agents)
        epoch, head = before["epoch"], before["seq"]
        async with bare(second.room_url(ROOM)) as ws:
            assert (await ws.hello("spectator", resume=[epoch, head]))["sync"] == "current"
        async with bare(second.room_url(ROOM)) as ws:
            welcome = await ws.hello("spectator", resume=[epoch, head - 5])
            assert welcome["sync"] == "replay"
            assert [(await ws.recv())[1] for _ in range(5)] == list(range(head - 4, head + 1))


async def test_graceful_shutdown_under_load_applies_only_what_it_records(tmp_path: Path) -> None:
    """Actions racing a SIGTERM are acked and durable, or not applied; acked aids match state."""
    db = tmp_path / "x.db"
    agents = [Agent(f"agent{i}", window=16) for i in range(4)]
    async with server_process(db) as first:
        _, load = await run_agents(first.room_url(ROOM), agents, until_acked=200)
        assert await first.stop(signal.SIGTERM) == 0  # the agents are still sending
        await asyncio.wait_for(load, TIMEOUT)
    assert all(agent.close_code == 1001 for agent in agents)

    async with server_process(db) as second:
        await check_room(second, agents)


async def test_http_action_after_rooms_closed_is_refused_not_lost(tmp_path: Path) -> None:
    """Once shutdown has closed the rooms, an HTTP action gets 503 and is not applied."""
    db = f"sqlite:{tmp_path}/x.db"
    async with running_server(store=db) as server, http_session() as http:
        url = f"{server.http_url}/rooms/{ROOM}/actions"
        action = {"client": "h", "aid": 1, "name": "patch", "args": [[0, ["a"], 1]]}
        async with http.post(url, json=action) as response:
            assert response.status == 200
        await server.app.rooms.close()  # the step of App.stop before the listeners close
        async with http.post(url, json={**action, "aid": 2}) as response:
            assert response.status == 503
    async with running_server(store=db) as server:
        body = await get_json(f"{server.http_url}/rooms/{ROOM}/state")
        assert body["state"] == {"a": 1} and body["seq"] == 1
        client = await get_json(f"{server.http_url}/rooms/{ROOM}/clients/h")
        assert client["acked"] == 1


async def test_async_durability_flushes_on_sigterm_and_changes_epoch_after_kill_9(
    tmp_path: Path,
) -> None:
    """--durability async: a clean stop keeps everything; after a kill -9 the room goes on
    from its stored head as seq 0 of a new epoch."""
    db = tmp_path / "x.db"
    agents = [Agent(f"agent{i}") for i in range(3)]
    async with server_process(db, "--durability=async") as first:
        stop, load = await run_agents(first.room_url(ROOM), agents, until_acked=150)
        stop.set()
        await asyncio.wait_for(load, TIMEOUT)
        assert await first.stop(signal.SIGTERM) == 0
    epoch = agents[0].epoch
    head = max(seq for agent in agents for seq in agent.acked.values())
    async with server_process(db, "--durability=async") as second:
        body = await check_room(second, agents)
        assert body["epoch"] == epoch and body["seq"] == head
        more = [Agent(f"more{i}") for i in range(2)]
        _, load = await run_agents(second.room_url(ROOM), more, until_acked=100)
        second.proc.kill()
        await second.proc.wait()
        await asyncio.wait_for(load, TIMEOUT)
    async with server_process(db, "--durability=async") as third:
        body = await check_room(third, agents)
        assert body["epoch"] != epoch and body["seq"] == 0  # the stored head is the new seq 0
        async with bare(third.room_url(ROOM)) as ws:
            welcome = await ws.hello("spectator", resume=[epoch, head])
            assert welcome["sync"] == "snapshot" and welcome["epoch"] == body["epoch"]
            assert await ws.recv() == [3, body["epoch"], 0, body["state"]]


class FailingStore(SQLiteStore):
    """A SQLite store whose appends fail while ``broken`` is set (a full disk, say)."""

    broken = False

    async def append(self, room: str, changes: Sequence[StoredChange]) -> None:
        if self.broken:
            self.broken = False
            raise OSError("disk full")
        await super().append(room, changes)


async def test_async_write_failure_fails_the_room_and_reloads_it_on_a_new_epoch(
    tmp_path: Path,
) -> None:
    """Async mode: a lost write closes the room's clients with 1011; it returns on a new epoch."""
    store = FailingStore(str(tmp_path / "x.db"), durability="async")
    config = Config(host="127.0.0.1", port=0, http_port=0, durability="async", store="memory")
    app = App(config, store=store)
    ports = await app.start()
    url = f"ws://127.0.0.1:{ports.ws}/rooms/{ROOM}"
    try:
        async with bare(url) as ws:
            welcome = await ws.hello("agent", client="c")
            await ws.recv_type(3)
            await ws.send([4, 1, "patch", [[0, ["a"], 1]]])
            assert await ws.recv_type(7) == [7, 1, 1]
            await app.rooms.drain()
            store.broken = True
            await ws.send([4, 2, "patch", [[0, ["a"], 2]]])
            assert await ws.closed() == 1011
        async with bare(url) as ws:
            again = await ws.hello("agent", client="c", resume=[welcome["epoch"], 2])
            assert again["epoch"] != welcome["epoch"] and again["sync"] == "snapshot"
            assert again["seq"] == 0 and again["acked"] == 1  # the new epoch starts at 0
            assert await ws.recv() == [3, again["epoch"], 0, {"a": 1}]
            await ws.send([4, 3, "patch", [[0, ["b"], 1]]])
            assert await ws.recv_type(7) == [7, 3, 1]
    finally:
        await app.stop()


async def test_async_write_failure_then_clean_stop_still_changes_the_epoch(tmp_path: Path) -> None:
    """Async mode: a room that lost a write and was never reloaded restarts on a new epoch."""
    db = tmp_path / "x.db"
    store = FailingStore(str(db), durability="async")
    config = Config(host="127.0.0.1", port=0, http_port=0, durability="async", store="memory")
    app = App(config, store=store)
    ports = await app.start()
    try:
        async with bare(f"ws://127.0.0.1:{ports.ws}/rooms/{ROOM}") as ws:
            welcome = await ws.hello("agent", client="c")
            await ws.recv_type(3)
            store.broken = True
            await ws.send([4, 1, "patch", [[0, ["a"], 1]]])
            assert await ws.closed() == 1011
    finally:
        await app.stop()
    async with running_server(store=f"sqlite:{db}") as server:
        body = await get_json(f"{server.http_url}/rooms/{ROOM}/state")
        assert body["epoch"] != welcome["epoch"] and body["seq"] == 0 and body["state"] == {}

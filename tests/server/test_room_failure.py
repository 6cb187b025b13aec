"""A room whose store fails: every subscriber is told, nothing is acknowledged after the
failure is known, the room returns on a new epoch when published writes were lost, and
no task of the failed room is left behind.

The store here is the memory store with a gate: its next append can be held (so a test
can line up what happens while the write is in flight) and then fail, as a stalled disk
that fills up would.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from websockets.protocol import State

import statecast.server.writer
from statecast.server.app import App
from statecast.server.config import Config
from statecast.server.live import LiveRoom, Request, RoomFailed
from statecast.server.store.base import StoredChange
from statecast.server.store.memory import MemoryStore
from tests.helpers import (
    ONE_HOST_SETTINGS,
    TIMEOUT,
    BareClient,
    RunningServer,
    bare,
    http_session,
)
from tests.server.test_slow_subscriber import (
    BLOB,
    HIGH_WATER,
    MAX_ACTIONS,
    drain_until_closed,
    eventually,
    fast_limits,
    join_and_stall,
    server_side,
    stalled_client,
)
from tests.server.test_slow_subscriber import ROOM as SLOW_ROOM

ROOM = "failing"


class GatedStore(MemoryStore):
    """A memory store whose next append, once ``hold`` is set, waits for ``release`` and fails."""

    durable = True  # so that --durability async writes behind, as with SQLite

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.fail_checkpoint = False

    async def append(self, room: str, changes: Sequence[StoredChange]) -> None:
        if self.hold:
            self.hold = False
            self.entered.set()
            await self.release.wait()
            raise OSError("disk full")
        await super().append(room, changes)

    async def checkpoint(self, room: str, seq: int, state: bytes, acked: dict[str, int]) -> None:
        if self.fail_checkpoint:
            raise OSError("disk full")
        await super().checkpoint(room, seq, state, acked)


@contextlib.asynccontextmanager
async def serving(store: GatedStore, **settings: Any) -> AsyncIterator[tuple[App, str, str]]:
    """(app, WebSocket room URL, HTTP base URL) of a server on ``store``."""
    settings = {**ONE_HOST_SETTINGS, **settings}
    config = Config(host="127.0.0.1", port=0, http_port=0, store="memory", **settings)
    app = App(config, store=store)
    ports = await app.start()
    try:
        yield app, f"ws://127.0.0.1:{ports.ws}/rooms/{ROOM}", f"http://127.0.0.1:{ports.http}"
    finally:
        await app.stop()


def live_room(app: App) -> LiveRoom:
    return app.rooms.rooms[ROOM]


async def test_lagging_subscriber_of_a_failed_room_is_closed_1011() -> None:
    """A subscriber that fell behind for real (it stopped reading, and the room skipped it
    ahead, waiting to send it a SNAPSHOT) when the room fails is closed with 1011 too: the
    close reaches it behind what it was owed, once it reads again."""
    store = GatedStore()
    settings = {"slow_high_water": HIGH_WATER, "slow_timeout": TIMEOUT * 4, **fast_limits()}
    async with serving(store, durability="ack", **settings) as (app, url, http_url):
        server = RunningServer(app, url.rsplit("/rooms/", 1)[0], http_url)
        async with stalled_client(server) as slow_ws, bare(server.room_url(SLOW_ROOM)) as agent:
            # Pushes until the stalled spectator is skipped ahead: it then waits, out of the
            # room's members, for its backlog to drain before its SNAPSHOT, and it does not
            # read, so it is still waiting when the room fails.
            await join_and_stall(server, slow_ws, agent)
            assert app.metrics.registry.get_sample_value("statecast_slow_subscriber_skips_total")
            store.hold = True
            await agent.send([4, 100_000, "patch", [[0, ["x"], 1]]])
            await asyncio.wait_for(store.entered.wait(), TIMEOUT)
            reader = asyncio.create_task(drain_until_closed(slow_ws))
            store.release.set()
            assert await agent.closed() == 1011
            await reader
            assert slow_ws.close_code == 1011


async def test_write_failure_found_by_the_next_batch_still_starts_a_new_epoch() -> None:
    """Async mode: a lost write that the next batch notices first still gives a new epoch."""
    store = GatedStore()
    async with serving(store, durability="async") as (app, url, http_url):
        async with bare(url) as agent:
            welcome = await agent.hello("agent", client="a")
            await agent.recv_type(3)
            live = live_room(app)
            store.hold = True
            await agent.send([4, 1, "patch", [[0, ["x"], 1]]])
            assert await agent.recv_type(7) == [7, 1, 1]  # published ahead of the write
            await asyncio.wait_for(store.entered.wait(), TIMEOUT)
            # The failing write and the next batch become ready in the same pass, the write first.
            reply: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
            store.release.set()
            live.submit(Request("b", 1, "patch", [[0, ["y"], 1]], reply, time.perf_counter()))
            with pytest.raises(RoomFailed):
                await asyncio.wait_for(reply, TIMEOUT)
            assert await agent.closed() == 1011
        async with http_session() as http, http.get(f"{http_url}/rooms/{ROOM}/state") as resp:
            body = await resp.json()
        assert body["epoch"] != welcome["epoch"] and body["seq"] == 0 and body["state"] == {}


async def test_lost_write_starts_the_new_epoch_at_seq_0_from_the_stored_head() -> None:
    """Async mode: after a lost write every client resumes to a SNAPSHOT of (new epoch, 0)
    holding the stored head's state, the acked aids are kept, and the next diff is seq 1."""
    store = GatedStore()
    async with serving(store, durability="async") as (app, url, _):
        async with bare(url) as agent, bare(url) as watcher:
            welcome = await agent.hello("agent", client="a")
            await agent.recv_type(3)
            await watcher.hello("spectator")
            await watcher.recv_type(3)
            for aid in (1, 2, 3):
                await agent.send([4, aid, "patch", [[0, ["k"], aid]]])
                assert await agent.recv_type(7) == [7, aid, aid]
            await app.rooms.drain()  # seqs 1-3 are in the store
            store.hold = True
            await agent.send([4, 4, "patch", [[0, ["lost"], 1]]])
            assert await agent.recv_type(7) == [7, 4, 4]  # published ahead of the write
            await asyncio.wait_for(store.entered.wait(), TIMEOUT)
            store.release.set()
            assert await agent.closed() == 1011
            assert await watcher.closed() == 1011
        old = [welcome["epoch"], 4]
        async with bare(url) as agent, bare(url) as watcher:
            again = await agent.hello("agent", client="a", resume=old)
            seen = await watcher.hello("spectator", resume=old)
            for client, hello in ((agent, again), (watcher, seen)):
                assert hello["sync"] == "snapshot" and hello["epoch"] != welcome["epoch"]
                assert hello["seq"] == 0
                assert await client.recv() == [3, hello["epoch"], 0, {"k": 3}]
            assert again["acked"] == 3 and seen["epoch"] == again["epoch"]
            await agent.send([4, 3, "patch", [[0, ["k"], 9]]])  # a duplicate: not applied
            await agent.send([4, 4, "patch", [[0, ["k"], 4]]])
            assert await agent.recv_type(7) == [7, 3, None]
            assert await agent.recv_type(7) == [7, 4, 1]
            assert await watcher.recv_type(5) == [5, 1, [[0, ["k"], 4]]]


async def test_room_failed_by_its_write_behind_stops_its_worker() -> None:
    """Async mode: a room failed by a write behind its publish ends its worker task."""
    store = GatedStore()
    async with serving(store, durability="async") as (app, url, _):
        async with bare(url) as agent:
            await agent.hello("agent", client="a")
            await agent.recv_type(3)
            live = live_room(app)
            store.hold = True
            await agent.send([4, 1, "patch", [[0, ["x"], 1]]])
            await asyncio.wait_for(store.entered.wait(), TIMEOUT)
            store.release.set()
            assert await agent.closed() == 1011
        assert live.failed is not None
        worker = live.writer._worker
        await asyncio.wait_for(asyncio.shield(worker), TIMEOUT)


async def test_action_waiting_on_a_write_that_fails_is_refused_not_acknowledged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Async mode: a batch that waited for the writer gets 503 when that write failed."""
    monkeypatch.setattr(
        statecast.server.writer, "MAX_UNWRITTEN", 0
    )  # every batch waits for its write
    store = GatedStore()
    async with serving(store, durability="async") as (_, url, http_url), http_session() as http:
        async with bare(url) as agent:
            await agent.hello("agent", client="a")
            await agent.recv_type(3)
        store.hold = True
        post = asyncio.create_task(
            http.post(
                f"{http_url}/rooms/{ROOM}/actions",
                json={"client": "h", "aid": 1, "name": "patch", "args": [[0, ["x"], 1]]},
            )
        )
        await asyncio.wait_for(store.entered.wait(), TIMEOUT)
        store.release.set()
        async with await asyncio.wait_for(post, TIMEOUT) as resp:
            assert resp.status == 503, await resp.text()
            assert (await resp.json())["code"] == "unavailable"


async def test_failed_room_releases_a_member_that_stopped_reading() -> None:
    """A member whose write buffer is full when the room fails is cut off, not held open."""
    store = GatedStore()
    settings = {"slow_high_water": HIGH_WATER, "slow_timeout": 0.2 * TIMEOUT / 5, **fast_limits()}
    async with serving(store, durability="ack", ping_interval=0, **settings) as (app, _, http):
        assert app.ports is not None
        server = RunningServer(app, f"ws://127.0.0.1:{app.ports.ws}", http)
        async with stalled_client(server) as slow_ws, bare(server.room_url(SLOW_ROOM)) as agent:
            slow = BareClient(slow_ws)
            await slow.hello("spectator")
            await slow.recv()
            await agent.hello("agent", client="pusher")
            await agent.recv_type(3)
            slow_conn = server_side(server, slow_ws)
            live = app.rooms.rooms[SLOW_ROOM]
            aid = 0
            # Fill its buffer past the high-water mark, short of the next pass that would skip it.
            while slow_conn.transport.get_write_buffer_size() <= HIGH_WATER:
                aid += 1
                assert aid < MAX_ACTIONS, "the slow client's buffer never filled"
                await agent.send([4, aid, "patch", [[0, ["k"], str(aid % 10) * BLOB]]])
                await agent.recv_type(7)
            assert any(sub.conn is slow_conn for sub in live.feed.members)
            store.hold = True
            await agent.send([4, aid + 1, "patch", [[0, ["n"], 1]]])
            await asyncio.wait_for(store.entered.wait(), TIMEOUT)
            store.release.set()
            assert await agent.closed() == 1011
            await eventually(lambda: slow_conn.state is State.CLOSED)


async def test_room_whose_last_checkpoint_fails_still_stops_its_worker() -> None:
    """Shutdown: a room whose final checkpoint fails still ends its worker task."""
    store = GatedStore()
    async with serving(store, durability="ack") as (app, url, _):
        async with bare(url) as agent:
            await agent.hello("agent", client="a")
            await agent.recv_type(3)
        live = live_room(app)
        store.fail_checkpoint = True
    assert live.writer._worker.done()

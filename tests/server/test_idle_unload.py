"""Idle rooms unload (checkpointed, memory freed) and load again with nothing lost.

A room with no connection and no request for ``--idle-unload`` seconds leaves
memory; the next request loads it from the store on the same epoch, so a client
resumes as if it had stayed. ``--max-rooms`` counts rooms held, so unloaded rooms
make room for new ones.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from statecast.server.history import MIN_HISTORY_BYTES
from tests.helpers import bare, eventually, http_session, make_room, running_server

IDLE = 0.2


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_idle_room_unloads_and_resumes_on_its_epoch(store: str, tmp_path: Path) -> None:
    """An idle room is unloaded; a rejoin resumes it on the same epoch, seq and aids."""
    url = "memory" if store == "memory" else f"sqlite:{tmp_path / 'rooms.db'}"
    async with running_server(store=url, idle_unload=IDLE) as srv:
        async with bare(srv.room_url("quiet")) as agent:
            welcome = await agent.hello("agent", client="a")
            await agent.recv_type(3)
            for aid in (1, 2, 3):
                await agent.send([4, aid, "patch", [[0, ["n"], aid]]])
                assert await agent.recv_type(7) == [7, aid, aid]
        await eventually(lambda: "quiet" not in srv.app.rooms.rooms)
        assert srv.app.metrics.registry.get_sample_value("statecast_rooms") == 0
        async with bare(srv.room_url("quiet")) as again:
            back = await again.hello("agent", client="a", resume=[welcome["epoch"], 1])
            assert (back["epoch"], back["seq"], back["acked"]) == (welcome["epoch"], 3, 3)
            if store == "sqlite":  # the log outlives the checkpoint: replay
                assert back["sync"] == "replay"
                assert await again.recv() == [5, 2, [[0, ["n"], 2]]]
                assert await again.recv() == [5, 3, [[0, ["n"], 3]]]
            else:  # the memory store drops the log at the checkpoint
                assert back["sync"] == "snapshot"
                assert await again.recv() == [3, welcome["epoch"], 3, {"n": 3}]
            await again.send([4, 3, "patch", [[0, ["n"], 99]]])  # already processed
            assert await again.recv_type(7) == [7, 3, None]
        async with (
            http_session() as http,
            http.get(f"{srv.http_url}/rooms/quiet/state") as resp,
        ):
            assert (await resp.json())["state"] == {"n": 3}


async def test_room_with_a_connection_stays_loaded() -> None:
    """A spectator that stays connected keeps its room in memory, however quiet the room."""
    async with running_server(idle_unload=IDLE) as srv, bare(srv.room_url("watched")) as watcher:
        await make_room(srv, "watched")
        await watcher.hello("spectator")
        await watcher.recv_type(3)
        async with bare(srv.room_url("other")) as passer:  # a room that does go idle
            await passer.hello("agent", client="p")
            await passer.recv_type(3)
        await eventually(lambda: "other" not in srv.app.rooms.rooms)
        assert "watched" in srv.app.rooms.rooms
        async with bare(srv.room_url("watched")) as agent:
            await agent.hello("agent", client="a")
            await agent.recv_type(3)
            await agent.send([4, 1, "patch", [[0, ["k"], 1]]])
            assert await watcher.recv() == [5, 1, [[0, ["k"], 1]]]


async def test_max_rooms_counts_rooms_held_not_rooms_created() -> None:
    """With --max-rooms 1, a second room is refused while the first is held, and
    accepted once the first has unloaded."""
    async with running_server(max_rooms=1, idle_unload=IDLE) as srv, http_session() as http:
        body = {"client": "c", "aid": 1, "name": "patch", "args": [[0, ["x"], 1]]}
        async with bare(srv.room_url("first")) as holder:
            await make_room(srv, "first")
            await holder.hello("spectator")
            await holder.recv_type(3)
            async with http.post(f"{srv.http_url}/rooms/second/actions", json=body) as resp:
                assert resp.status == 503
        await eventually(lambda: not srv.app.rooms.rooms)
        async with http.post(f"{srv.http_url}/rooms/second/actions", json=body) as resp:
            assert resp.status == 200 and await resp.json() == {"seq": 1}
        await eventually(lambda: not srv.app.rooms.rooms)
        async with http.get(f"{srv.http_url}/rooms/second/state") as resp:
            assert (await resp.json())["state"] == {"x": 1}


async def test_a_room_being_handed_to_a_join_is_not_unloaded_to_make_space() -> None:
    """A room just loaded for a HELLO stays held while the HELLO attaches, even when another
    request needs the space one loop turn later: the agent's actions are answered."""
    async with running_server(max_rooms=2, idle_unload=0) as srv, http_session() as http:
        for i in range(2):
            body = {"client": "c", "aid": 1, "name": "patch", "args": [[0, ["x"], i]]}
            async with http.post(f"{srv.http_url}/rooms/r{i}/actions", json=body) as resp:
                assert resp.status == 200
        manager = srv.app.rooms
        for name, live in list(manager.rooms.items()):  # both idle: unload them now
            manager._start_unload(name, live)
        await asyncio.gather(*manager._unloading.values())
        object.__setattr__(srv.app.config, "max_rooms", 1)
        plain_get = manager.get

        async def get_with_a_rival(name: str, *, create: bool) -> Any:
            if name == "r0":  # a request for r1 arrives one loop turn after r0's

                async def rival() -> None:
                    await asyncio.sleep(0)
                    await plain_get("r1", create=False)

                asyncio.get_running_loop().create_task(rival())
            return await plain_get(name, create=create)

        manager.get = get_with_a_rival  # type: ignore[method-assign]
        async with bare(srv.room_url("r0")) as agent:
            await agent.hello("agent", client="a")
            assert (await agent.recv())[3] == {"x": 0}
            await agent.send([4, 1, "patch", [[0, ["y"], 1]]])
            assert await agent.recv_type(7) == [7, 1, 2]
        assert "r0" in manager.rooms


async def test_a_reloaded_small_room_holds_about_its_state_size_of_history(
    tmp_path: Path,
) -> None:
    """A room reloaded from the store keeps the history a live room would (about its state's
    size, at least MIN_HISTORY_BYTES), not every logged diff."""
    url = f"sqlite:{tmp_path / 'rooms.db'}"
    settings = {"idle_unload": IDLE, "action_rate": 1e6, "action_burst": 10**6}
    async with running_server(store=url, **settings) as srv:
        async with bare(srv.room_url("small")) as agent:
            await agent.hello("agent", client="a")
            await agent.recv_type(3)
            last = 2000  # ~100 KB of diffs over a state of ~50 bytes
            for aid in range(1, last + 1):
                await agent.send([4, aid, "patch", [[0, ["n"], f"v{aid:05d}" + "x" * 40]]])
            while (await agent.recv_type(7))[1] != last:
                pass
        await eventually(lambda: "small" not in srv.app.rooms.rooms)
        async with bare(srv.room_url("small")) as spectator:
            await spectator.hello("spectator")
            await spectator.recv_type(3)
            history = srv.app.rooms.rooms["small"].feed.history
            assert 0 < history.size_after(history.oldest_seq - 1) <= MIN_HISTORY_BYTES

"""GET /rooms and GET /rooms/{room}: rooms in memory and in the store, pages, auth."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from statecast.server.app import App
from statecast.server.config import Config
from statecast.server.listing import SCAN_ROWS
from statecast.server.store import sqlite
from statecast.server.store.base import RoomSummary
from statecast.server.store.memory import MemoryStore
from statecast.server.store.sqlite import SQLiteStore
from tests.helpers import RunningServer, bare, http_session, make_room, running_server
from tests.server.test_auth import SECRET, bearer, jwt_server, token
from tests.server.test_protocol_messages import joined
from tests.server.test_store_contract import record

DOCUMENT = "statecast.server.rooms.document:DocumentRoom"
GRID = "statecast.server.rooms.grid:GridRoom"


async def get(srv: RunningServer, path: str, headers: dict[str, str] | None = None) -> Any:
    async with http_session() as http, http.get(srv.http_url + path, headers=headers) as r:
        return r.status, await r.json()


async def patch(srv: RunningServer, room: str, client: str, aid: int) -> None:
    async with bare(srv.room_url(room)) as ws:
        await ws.hello("agent", client=client)
        await ws.send([4, aid, "patch", [[0, ["n"], aid]]])
        assert (await ws.recv_type(7))[1] == aid


async def test_listing_shows_who_is_connected_to_rooms_in_memory() -> None:
    """A live room reports its type, epoch, head, connected agent ids and spectator count."""
    async with running_server(room_types=(f"grid-*={GRID}",)) as srv:
        await patch(srv, "doc", "writer", 1)
        await make_room(srv, "grid-1")
        async with (
            joined(srv, "doc", client="bot-b") as (_, welcome),
            joined(srv, "doc", client="bot-a"),
            joined(srv, "doc", "spectator"),
            joined(srv, "doc", "spectator"),
            joined(srv, "grid-1", "spectator"),
        ):
            status, body = await get(srv, "/rooms")
            assert status == 200
            assert body == {
                "rooms": [
                    {
                        "room": "doc",
                        "type": DOCUMENT,
                        "epoch": welcome["epoch"],
                        "seq": 1,
                        "agents": ["bot-a", "bot-b"],
                        "spectators": 2,
                    },
                    {
                        "room": "grid-1",
                        "type": GRID,
                        "epoch": body["rooms"][1]["epoch"],
                        "seq": 0,
                        "agents": [],
                        "spectators": 1,
                    },
                ],
                "next": None,
            }
            status, one = await get(srv, "/rooms/grid-1")
            assert status == 200
            assert one == {**body["rooms"][1], "actions": ["join", "leave", "move"]}
        status, after = await get(srv, "/rooms/doc")
        assert (after["agents"], after["spectators"], after["actions"]) == ([], 0, ["patch"])


async def test_rooms_only_in_the_store_are_listed_without_loading_them(tmp_path: Path) -> None:
    """After a restart, stored rooms are listed from the store; nothing is loaded or created."""
    store = f"sqlite:{tmp_path / 'l.db'}"
    async with running_server(store=store) as srv:
        for i, name in enumerate(("b", "a", "c")):
            await patch(srv, name, "w", i + 1)
        status, before = await get(srv, "/rooms")
    async with running_server(store=store) as srv:
        status, body = await get(srv, "/rooms")
        assert status == 200
        assert [(r["room"], r["seq"], r["agents"], r["spectators"]) for r in body["rooms"]] == [
            ("a", 1, [], 0),
            ("b", 1, [], 0),
            ("c", 1, [], 0),
        ]
        assert [r["epoch"] for r in body["rooms"]] == [r["epoch"] for r in before["rooms"]]
        status, one = await get(srv, "/rooms/b")
        assert status == 200 and one["actions"] == ["patch"] and one["seq"] == 1
        status, missing = await get(srv, "/rooms/nope")
        assert status == 404 and missing["code"] == "no_such_room"
        assert srv.app.rooms.rooms == {}
        assert await srv.app.store.room_summary("nope") is None


async def test_pages_follow_next_in_name_order() -> None:
    """limit and after page through the rooms; next is the last name while more follow."""
    async with running_server() as srv:
        names = [f"r{i:02d}" for i in range(7)]
        for name in reversed(names):
            await patch(srv, name, "w", 1)
        seen: list[str] = []
        after = ""
        while True:
            status, body = await get(srv, f"/rooms?limit=3&after={after}")
            assert status == 200 and len(body["rooms"]) <= 3
            seen.extend(r["room"] for r in body["rooms"])
            if body["next"] is None:
                break
            assert body["next"] == body["rooms"][-1]["room"]
            after = body["next"]
        assert seen == names
        status, body = await get(srv, "/rooms?limit=7")
        assert len(body["rooms"]) == 7 and body["next"] is None
        for bad in ("0", "-1", "x", "1001", "1.5", ""):
            status, body = await get(srv, f"/rooms?limit={bad}")
            assert status == 400 and body["code"] == "invalid", bad


class CountingStore(MemoryStore):
    """The memory store, counting the rows its listing hands out."""

    rows_read = 0

    async def list_rooms(self, after: str | None, limit: int) -> list[RoomSummary]:
        page = await super().list_rooms(after, limit)
        self.rows_read += len(page)
        return page


@contextlib.asynccontextmanager
async def server_over(store: MemoryStore, **settings: Any) -> AsyncIterator[RunningServer]:
    app = App(Config(host="127.0.0.1", port=0, http_port=0, store="memory", **settings), store)
    ports = await app.start()
    try:
        yield RunningServer(app, f"ws://127.0.0.1:{ports.ws}", f"http://127.0.0.1:{ports.http}")
    finally:
        await app.stop()


async def test_a_page_of_ten_thousand_rooms_reads_one_page() -> None:
    """With 10,000 stored rooms a page reads limit + 1 rows; a narrow token reads a bounded scan."""
    store = CountingStore()
    await store.open()
    for i in range(10_000):
        await store.create(f"room-{i:05d}", record())
    async with server_over(store, auth="jwt", jwt_secret=SECRET) as srv:
        every = bearer(token(role="spectator", rooms=["*"]))
        status, body = await get(srv, "/rooms?limit=10&after=room-04999", every)
        assert status == 200 and body["next"] == "room-05009"
        assert [r["room"] for r in body["rooms"]][:2] == ["room-05000", "room-05001"]
        assert store.rows_read == 11
        store.rows_read = 0
        narrow = bearer(token(role="spectator", rooms=["room-09999"]))
        status, body = await get(srv, "/rooms?limit=10", narrow)
        assert status == 200 and body["rooms"] == [] and body["next"] is not None
        assert store.rows_read <= SCAN_ROWS + 11
        while body["next"] is not None:
            status, body = await get(srv, f"/rooms?limit=10&after={body['next']}", narrow)
            found = [r["room"] for r in body["rooms"]]
            if found:
                assert found == ["room-09999"]
                break
        assert found == ["room-09999"]
        assert srv.app.rooms.rooms == {}


async def test_sqlite_listing_reads_a_range_of_the_name_index(tmp_path: Path) -> None:
    """SQLite answers a page from the UNIQUE index on names, never a scan of every room."""
    store = SQLiteStore(str(tmp_path / "p.db"))
    await store.open()
    try:
        sql = sqlite._SUMMARY + "WHERE r.name > ? ORDER BY r.name LIMIT ?"
        plan = await store._conn().execute_fetchall("EXPLAIN QUERY PLAN " + sql, ("a", 10))
        details = " ".join(str(row[-1]) for row in plan)
        assert "USING INDEX" in details and "name>?" in details.replace(" ", ""), details
        assert "SCAN r" not in details, details
    finally:
        await store.close()


async def test_a_token_lists_only_the_rooms_it_grants() -> None:
    """With --auth jwt the listing holds the token's rooms; no token is 401 unless spectators
    are public; a room the token does not grant is 403."""
    async with jwt_server() as srv:
        for name in ("game-1", "game-2", "lobby"):
            async with bare(srv.room_url(name)) as ws:
                await ws.hello("agent", token=token(rooms=["*"]))
        status, body = await get(srv, "/rooms", bearer(token(role="spectator")))
        assert status == 200 and [r["room"] for r in body["rooms"]] == ["game-1", "game-2"]
        status, body = await get(srv, "/rooms")
        assert status == 401 and body["code"] == "unauthenticated"
        status, body = await get(srv, "/rooms", bearer("garbage"))
        assert status == 401
        status, body = await get(srv, "/rooms/lobby", bearer(token()))
        assert status == 403 and body["code"] == "forbidden"
        status, body = await get(srv, "/rooms/game-2", bearer(token(role="spectator")))
        assert status == 200 and body["room"] == "game-2"
    async with jwt_server(public_spectators=True) as srv:
        async with bare(srv.room_url("lobby")) as ws:
            await ws.hello("agent", token=token(rooms=["*"]))
        status, body = await get(srv, "/rooms")
        assert status == 200 and [r["room"] for r in body["rooms"]] == ["lobby"]

"""``GET /rooms`` and ``GET /rooms/{room}``: which rooms exist and who is in them.

Rows come from the store in name order, a page at a time (O(page), never
O(rooms)); a room held in memory overlays its live epoch, head, connected agents
and spectator count, and a room only in the store shows what the store has
(no one connected). In a cluster the agents and spectators are every node's, from
Redis. Nothing here loads or creates a room.

With auth, a page shows only the rooms the token grants. Filtering can leave a
page short: at most :data:`SCAN_ROWS` stored rows are read per request, and
``next`` is then the last name read, so a client follows ``next`` until it is
null whatever a page holds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from statecast.protocol.errors import NoSuchRoom, Rejection
from statecast.server.live import LiveRoom
from statecast.server.registry import RoomTypeMissing, type_name
from statecast.server.store.base import RoomSummary

if TYPE_CHECKING:
    from statecast.server.app import App

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
#: Stored rows read per request at most, however few of them the token may see.
SCAN_ROWS: Final = 2000


def bearer(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if any."""
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else None


class Listing:
    def __init__(self, app: App) -> None:
        self.app = app

    def row(self, summary: RoomSummary) -> dict[str, Any]:
        live = self.app.rooms.rooms.get(summary.room)
        if live is not None and live.failed is None:
            return self.live_row(live)
        return {
            "room": summary.room,
            "type": summary.type_name,
            "epoch": summary.epoch,
            "seq": summary.seq,
            "agents": [],
            "spectators": 0,
        }

    def live_row(self, live: LiveRoom) -> dict[str, Any]:
        feed = live.feed
        return {
            "room": feed.name,
            "type": feed.type_name or type_name(self.app.room_types.for_room(feed.name)),
            "epoch": feed.epoch,
            "seq": feed.head,
            "agents": live.presence.agents,
            "spectators": live.presence.spectators,
        }

    async def page(
        self, after: str | None, limit: int, visible: Callable[[str], bool]
    ) -> tuple[list[dict[str, Any]], str | None]:
        store = self.app.store
        rows: list[dict[str, Any]] = []
        cursor, scanned = after, 0
        while True:
            want = limit + 1 - len(rows)
            batch = await store.list_rooms(cursor, want)
            scanned += len(batch)
            rows.extend(self.row(s) for s in batch if visible(s.room))
            if len(rows) > limit:
                return await self.counted(rows[:limit]), rows[limit - 1]["room"]
            if len(batch) < want:
                return await self.counted(rows), None
            cursor = batch[-1].room
            if scanned >= SCAN_ROWS:
                return await self.counted(rows), cursor

    async def counted(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """In a cluster, each row's agents and spectators over every node (one Redis
        round trip for the page; see server/store/redis.py ``who``)."""
        cluster = self.app.cluster
        if cluster is None or not rows:
            return rows
        who = await cluster.store.who([row["room"] for row in rows])
        for row in rows:
            row["agents"], row["spectators"] = who[row["room"]]
        return rows

    async def rooms(self, request: web.Request) -> web.StreamResponse:
        visible = self.app.auth.visible_rooms(bearer(request))
        text = request.query.get("limit", str(DEFAULT_LIMIT))
        if not (text.isascii() and text.isdigit() and 1 <= int(text[:6]) <= MAX_LIMIT):
            raise Rejection("invalid", f"limit must be an integer from 1 to {MAX_LIMIT}")
        after = request.query.get("after") or None
        rows, next_name = await self.page(after, int(text), visible)
        if self.app.auth.view_claim(bearer(request)) is not None:
            for row in rows:  # client ids a view-limited reader may not see: their number
                row["agent_count"] = len(row.pop("agents", ()))
        return web.json_response({"rooms": rows, "next": next_name})

    async def room(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["room"]
        identity = self.app.auth.authorize(bearer(request), name, "spectator", None)
        live = self.app.rooms.rooms.get(name)
        if live is not None and live.failed is None:
            body = self.live_row(live)
        else:
            summary = await self.app.store.room_summary(name)
            if summary is None:
                raise NoSuchRoom(f"no room {name!r}")
            body = self.row(summary)
        (body,) = await self.counted([body])
        if identity.view is not None:
            # Who is present names other agents: a token limited to part of the room
            # reads their number (spectators too), not their ids (docs/protocol.md §10.7).
            body["agent_count"] = len(body.pop("agents", ()))
        try:
            body["actions"] = self.app.room_types.for_stored(name, body["type"]).action_names()
        except RoomTypeMissing as exc:
            body["actions"] = []  # not served here: the room keeps its type's rules
            body["error"] = {"code": "room_type_missing", "message": str(exc)}
        return web.json_response(body)

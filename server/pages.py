"""The browser side of the HTTP listener: the room list, the watch page, the JS client.

``/`` lists rooms, ``/rooms/{room}/watch`` watches one, ``/static/...`` serves
statecast.js and everything in server/web/ (shipped as package data, so a running
server needs no Node). The watch page learns the WebSocket port from a meta tag.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from statecast.protocol.rooms import ROOM_NAME_RULE, room_name_problem

if TYPE_CHECKING:
    from statecast.server.app import App

WEB_DIR = Path(__file__).resolve().parent / "web"

_NO_CACHE = {"Cache-Control": "no-cache"}


def _message_page(status: int, title: str, text: str) -> web.Response:
    """A plain page for a person who opened a watch link that cannot work."""
    body = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><link rel='stylesheet' href='/static/style.css'></head><body><main>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>"
        f"<p><a href='/'>All rooms</a></p></main></body></html>"
    )
    return web.Response(status=status, text=body, content_type="text/html", headers=_NO_CACHE)


class Pages:
    def __init__(self, app: App) -> None:
        self.app = app
        self._index = (WEB_DIR / "index.html").read_text()
        self._watch = (WEB_DIR / "watch.html").read_text()

    def add_routes(self, router: web.UrlDispatcher, room_pattern: str) -> None:
        router.add_get("/", self.index)
        router.add_get(f"/rooms/{{room:{room_pattern}}}/watch", self.watch)
        router.add_static("/static", WEB_DIR, append_version=False)
        router.add_get("/favicon.ico", self.favicon)

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=self._index, content_type="text/html", headers=_NO_CACHE)

    async def favicon(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=204)

    async def bad_room_name(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["room"]
        return _message_page(400, "Bad room name", room_name_problem(name) or ROOM_NAME_RULE)

    async def watch(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["room"]
        if name not in self.app.rooms.rooms and await self.app.store.room_summary(name) is None:
            return _message_page(
                404,
                "No such room",
                f"There is no room {name!r} yet: an agent creates it by joining "
                f"(ws://HOST:PORT/rooms/{name}). Rooms that exist are listed on /.",
            )
        ports = self.app.ports
        port = str(ports.ws if ports is not None else self.app.config.port)
        body = self._watch.replace("__STATECAST_WS_PORT__", port)
        return web.Response(text=body, content_type="text/html", headers=_NO_CACHE)

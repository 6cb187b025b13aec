"""The browser side of the HTTP listener: the room list, the watch page, the JS client.

``/`` lists rooms, ``/rooms/{room}/watch`` watches one, ``/static/...`` serves
statecast.js and everything in server/web/ (shipped as package data, so a running
server needs no Node). The watch page learns the WebSocket port from a meta tag.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from statecast.server.app import App

WEB_DIR = Path(__file__).resolve().parent / "web"

_NO_CACHE = {"Cache-Control": "no-cache"}


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

    async def watch(self, request: web.Request) -> web.StreamResponse:
        ports = self.app.ports
        port = str(ports.ws if ports is not None else self.app.config.port)
        body = self._watch.replace("__STATECAST_WS_PORT__", port)
        return web.Response(text=body, content_type="text/html", headers=_NO_CACHE)

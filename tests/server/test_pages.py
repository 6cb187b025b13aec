"""The browser side of the HTTP listener: pages, the JS client and its package data."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

from statecast.server.pages import WEB_DIR
from tests.helpers import RunningServer, http_session, make_room

ROOT = Path(__file__).resolve().parents[2]


async def test_pages_and_the_client_are_served_as_what_they_are(server: RunningServer) -> None:
    """/ and the watch page are HTML (the watch page names the WebSocket port); scripts are
    JavaScript, so browsers run them as modules."""
    ws_port = server.ws_url.rsplit(":", 1)[1]
    async with http_session() as http:
        async with http.get(f"{server.http_url}/") as r:
            assert r.status == 200 and r.content_type == "text/html"
            assert "/static/index-page.js" in await r.text()
        async with http.get(f"{server.http_url}/rooms/nobody/watch") as r:
            assert r.status == 404 and r.content_type == "text/html"
        assert "nobody" not in server.app.rooms.rooms  # a page view creates nothing
        await make_room(server, "lobby")
        async with http.get(f"{server.http_url}/rooms/lobby/watch") as r:
            assert r.status == 200 and r.content_type == "text/html"
            assert f'name="statecast-ws-port" content="{ws_port}"' in await r.text()
        for path in ("statecast.js", "ops.js", "vendor/msgpack/index.mjs", "watch-page.js"):
            async with http.get(f"{server.http_url}/static/{path}") as r:
                assert r.status == 200, path
                assert r.content_type in ("text/javascript", "application/javascript"), path
        async with http.get(f"{server.http_url}/static/vendor/msgpack/LICENSE") as r:
            assert r.status == 200 and "MessagePack" in await r.text()
        for path in ("/static/../http.py", "/static/%2e%2e/http.py", "/static/nope.js"):
            async with http.get(f"{server.http_url}{path}") as r:
                assert r.status in (403, 404), path


def test_every_web_file_ships_in_the_package() -> None:
    """Every file under server/web/ matches the package-data globs, so `pip install .` has it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["statecast.server"]
    files = [p.relative_to(WEB_DIR.parent).as_posix() for p in WEB_DIR.rglob("*") if p.is_file()]
    assert len(files) > 20
    missing = [f for f in files if not any(fnmatch.fnmatchcase(f, g) for g in globs)]
    assert missing == []


async def test_every_answer_carries_the_security_headers_and_no_versions(
    server: RunningServer,
) -> None:
    """nosniff, no referrer, no framing and a Server header without versions on pages,
    static files and JSON; a strict CSP on the pages that lets the page reach only this
    server's own WebSocket listener; /healthz tells nothing but its status."""
    ws_port = server.ws_url.rsplit(":", 1)[1]
    async with http_session() as http:
        for path in ("/", "/static/statecast.js", "/rooms", "/healthz", "/rooms/nobody/watch"):
            async with http.get(f"{server.http_url}{path}") as r:
                assert r.headers["X-Content-Type-Options"] == "nosniff", path
                assert r.headers["Referrer-Policy"] == "no-referrer", path
                assert r.headers["X-Frame-Options"] == "DENY", path
                assert r.headers["Server"] == "statecast", path
                if r.content_type == "text/html":
                    csp = r.headers["Content-Security-Policy"]
                    assert "default-src 'none'" in csp and "script-src 'self'" in csp
                    assert f"ws://127.0.0.1:{ws_port}" in csp and "frame-ancestors 'none'" in csp
                    assert "unsafe-inline" not in csp
        async with http.get(f"{server.http_url}/healthz") as r:
            assert await r.json() == {"status": "ok"}

"""A page on another origin polls /state with ETags in Chromium (docs/operations.md's poller).

The page is served by a second HTTP server on another port, so every request it
makes to statecast is cross-origin and goes through the browser's CORS checks,
preflight included (If-None-Match is not a CORS-safelisted request header).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Page

from tests.helpers import http_session, running_server
from tests.server.test_http_api import patch

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.asyncio(loop_scope="module")


def documented_poller() -> str:
    """The ```js block of docs/operations.md's CORS section, as a user would copy it."""
    doc = (ROOT / "docs" / "operations.md").read_text()
    section = doc.split("## Browsers on other origins (CORS)", 1)[1]
    match = re.search(r"```js\n(.*?)```", section, re.S)
    assert match, "docs/operations.md's CORS section shows no poller"
    return match.group(1)


@contextlib.asynccontextmanager
async def page_origin() -> AsyncIterator[str]:
    """Serve an empty page and the poller module on 127.0.0.1, a port of its own."""

    async def index(request: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>poller</title>", content_type="text/html")

    async def module(request: web.Request) -> web.Response:
        return web.Response(text=documented_poller(), content_type="text/javascript")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/poll.js", module)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server: Any = site._server
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        await runner.cleanup()


POLL = """async ([base, room]) => {
  const { poll } = await import("/poll.js");
  try { return await poll(base, room); } catch (e) { return { error: String(e) }; }
}"""


async def test_a_page_on_another_origin_polls_with_etags(page: Page) -> None:
    async with page_origin() as origin, running_server(cors_origins=origin) as server:
        async with http_session() as http:
            await patch(http, server, "poll", 1, [0, ["n"], 1])
        await page.goto(f"{origin}/")
        first = await page.evaluate(POLL, [server.http_url, "poll"])
        assert first == {"status": 200, "state": {"n": 1}}
        again = await page.evaluate(POLL, [server.http_url, "poll"])
        assert again == {"status": 304, "state": {"n": 1}}  # the page read the ETag and sent it
        async with http_session() as http:
            await patch(http, server, "poll", 2, [0, ["n"], 2])
        after = await page.evaluate(POLL, [server.http_url, "poll"])
        assert after == {"status": 200, "state": {"n": 2}}


async def test_without_cors_origins_the_browser_refuses_the_read(page: Page) -> None:
    async with page_origin() as origin, running_server() as server:
        async with http_session() as http:
            await patch(http, server, "poll", 1, [0, ["n"], 1])
        await page.goto(f"{origin}/")
        refused = await page.evaluate(POLL, [server.http_url, "poll"])
        assert "error" in refused and "Failed to fetch" in refused["error"]

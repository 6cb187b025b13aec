"""The room list page in a real Chromium against a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import re

import pytest
from playwright.async_api import Browser, Page, Route
from playwright.async_api import Error as PlaywrightError

from statecast import connect
from tests.helpers import TIMEOUT, http_session, running_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

MS = TIMEOUT * 1000
PAGE = 50  # index-page.js's page size


async def test_a_slow_answer_for_the_old_page_never_overwrites_the_next_one(page: Page) -> None:
    """The periodic refresh of page one is held in flight while "Next page" is clicked;
    once page two shows, page one's answer is let through, and page two stays."""
    names = [f"room-{i:03d}" for i in range(PAGE + 3)]
    async with running_server(action_rate=0) as srv:
        async with http_session() as http:
            for name in names:
                body = {"client": "w", "aid": 1, "name": "patch", "args": [[0, ["x"], 1]]}
                async with http.post(f"{srv.http_url}/rooms/{name}/actions", json=body) as resp:
                    assert resp.status == 200, await resp.text()

        held: list[Route] = []
        holding, caught = asyncio.Event(), asyncio.Event()

        async def first_page(route: Route) -> None:
            if holding.is_set() and "after=" not in route.request.url:
                held.append(route)
                caught.set()
                return
            await route.continue_()

        await page.route(re.compile(r"/rooms\?"), first_page)
        await page.goto(f"{srv.http_url}/")
        await page.locator("#next").wait_for(state="visible", timeout=MS)
        assert await page.locator("#rooms tr").count() == PAGE
        holding.set()
        # The next periodic refresh (page one) now hangs until released.
        await asyncio.wait_for(caught.wait(), TIMEOUT)
        await page.locator("#next").click()
        rows = page.locator("#rooms tr")
        await page.locator(f'tr[data-room="{names[PAGE]}"]').wait_for(timeout=MS)
        for route in held:
            with contextlib.suppress(PlaywrightError):  # the page may have aborted it
                await route.continue_()
        await page.wait_for_function(
            "() => window.statecastRooms.stale >= 1", timeout=MS, polling=20
        )
        rooms = [await rows.nth(i).get_attribute("data-room") for i in range(await rows.count())]
        assert rooms == names[PAGE:]
        assert await page.locator("#first").is_visible()


async def test_the_pages_run_under_their_own_csp(browser: Browser) -> None:
    """With the CSP enforced (no bypass, no evaluated probe): the room list lists the room and
    the watch page goes live and shows its state, and the browser reports no CSP violation."""
    async with running_server() as server:
        async with connect(server.room_url("csp"), client="a") as agent:
            await agent.act("patch", [[0, ["shown"], "under csp"]])
        context = await browser.new_context()
        page = await context.new_page()
        violations: list[str] = []
        page.on(
            "console",
            lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
        )
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            await page.goto(f"{server.http_url}/")
            await page.locator("#rooms").get_by_text("csp").wait_for(timeout=10_000)
            await page.goto(f"{server.http_url}/rooms/csp/watch")
            await page.locator("#status", has_text="live").wait_for(timeout=10_000)
            await page.locator("#tree").get_by_text("under csp").wait_for(timeout=10_000)
        finally:
            await context.close()
        assert violations == [] and errors == []

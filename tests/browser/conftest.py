"""A real Chromium for the browser tests: Debian's build, driven by Playwright.

One browser per test module (launching costs about a second), a fresh context and
page per test. There is no skipping: without Chromium the tests fail and say how to
install it (`make test` and `.ci/run` install it when missing).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = os.environ.get("STATECAST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        pytest.fail(
            "Chromium is not installed: the browser tests need Debian's chromium "
            "(apt-get install -y --no-install-recommends chromium), or STATECAST_CHROMIUM "
            "set to a Chromium binary. `make test` and .ci/run install it when missing.",
            pytrace=False,
        )
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    """Chromium with a fresh temporary profile (Playwright makes one per launch)."""
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A page in a context of its own; page errors fail the test.

    The tests probe the page with string expressions that Playwright evaluates in it, which
    the pages' CSP (rightly) forbids; so this context bypasses the CSP, and
    test_the_pages_run_under_their_own_csp checks the pages under it with no probe."""
    context = await browser.new_context(viewport={"width": 1280, "height": 820}, bypass_csp=True)
    tab = await context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield tab
    finally:
        await context.close()
    assert not errors, f"errors in the page: {errors}"

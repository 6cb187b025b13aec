"""Shared fixtures: real servers on 127.0.0.1 (port 0), bare WebSocket clients, timeouts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.helpers import running_server


@pytest.fixture
async def server() -> AsyncIterator[Any]:
    """A server with the in-memory store and default settings."""
    async with running_server() as srv:
        yield srv

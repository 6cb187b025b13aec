"""Shared fixtures: real servers on 127.0.0.1 (port 0), bare WebSocket clients, timeouts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.helpers import running_server
from tests.redis_server import RedisServer, running_redis


@pytest.fixture
async def server() -> AsyncIterator[Any]:
    """A server with the in-memory store and default settings."""
    async with running_server() as srv:
        yield srv


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One Redis process for the session (tests flush it or use their own keys)."""
    with running_redis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    redis_server.flush()
    return redis_server.url

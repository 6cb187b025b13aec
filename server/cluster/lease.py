"""Room leases: at most one owner per room, renewed well within the TTL.

A lease is taken with a new fencing token (the store's ``acquire`` script), so
every write the owner makes is checked against the newest token inside Redis.
Renewal runs every third of the TTL for every owned room in one pipeline; a room
whose lease is found lost (expired while this node was paused or cut off, or
taken by a newer owner) is reported at once and this node stops writing for it. One
whose lease and keys are both gone (Redis restarted empty) is not lost to anyone: its
owner, which holds the freshest copy, takes the lease again and writes the room back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

import structlog

from statecast.server.store.base import StoreUnavailable

log = structlog.get_logger()


class LeaseStore(Protocol):
    gone: set[str]

    async def acquire(self, room: str, ttl: float) -> int | None: ...

    async def renew(self, rooms: list[str], ttl: float) -> set[str]: ...

    async def release(self, room: str, message: bytes) -> bool: ...

    def forget(self, room: str) -> None: ...


class Leases:
    def __init__(
        self,
        store: LeaseStore,
        ttl: float,
        on_lost: Callable[[str], None],
        on_gone: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.on_lost = on_lost
        #: Called for an owned room whose lease and keys Redis lost (nobody took it over).
        self.on_gone = on_gone
        self.owned: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._renew_forever(), name="lease renewal")

    async def acquire(self, room: str) -> bool:
        token = await self.store.acquire(room, self.ttl)
        if token is None:
            return False
        self.owned.add(room)
        log.info("room lease taken", room=room, token=token)
        return True

    async def release(self, room: str, message: bytes) -> None:
        if room in self.owned:
            self.owned.discard(room)
            await self.store.release(room, message)

    def drop(self, room: str) -> None:
        """Stop treating the room as owned (its write was refused, or it unloaded)."""
        self.owned.discard(room)
        self.store.forget(room)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            if not self.owned:
                continue
            try:
                lost = await self.store.renew(sorted(self.owned), self.ttl)
            except StoreUnavailable as exc:
                log.warning("lease renewal failed", error=str(exc), rooms=len(self.owned))
                continue
            for room in lost:
                if room in self.owned:
                    log.warning("room lease lost: this node stops writing for it", room=room)
                    self.drop(room)
                    self.on_lost(room)
            for room in self.store.gone:
                if room in self.owned and self.on_gone is not None:
                    log.warning("redis lost the room: its owner writes it back", room=room)
                    self.on_gone(room)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

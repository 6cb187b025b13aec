"""A room held by this process: its feed (server/feed.py), who is connected to it here
(server/presence.py) and, where this process owns the room, the writer that runs its
actions (server/writer.py). In a cluster, a room another node owns has a follower instead
(server/cluster/follower.py), and its actions are forwarded to the owner."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from statecast.server.feed import RoomFailed, RoomFeed
from statecast.server.presence import Hook, Presence
from statecast.server.writer import Request, RoomWriter

if TYPE_CHECKING:
    from statecast.server.cluster.follower import Follower

log = structlog.get_logger()


class LiveRoom:
    __slots__ = ("feed", "follower", "forward", "introduced", "last_active", "presence", "writer")

    def __init__(
        self,
        feed: RoomFeed,
        writer: RoomWriter | None,
        *,
        follower: Follower | None = None,
        forward: Callable[[LiveRoom, Request], None] | None = None,
        grace: float = 0.0,
    ) -> None:
        self.feed = feed
        #: Client ids each identity brought into the room (--room-clients-per-identity).
        self.introduced: dict[str, set[str]] = {}
        self.writer = writer
        self.follower = follower
        self.forward = forward
        if writer is not None:
            hooks = writer.room.has_presence_hooks()
            self.presence = Presence(writer.config.leave_grace, self._hook, hooks=hooks)
            self.presence.seed(writer.room.present_agents())
        else:
            # A followed room tracks its connections; its owner runs the hooks of its own.
            self.presence = Presence(grace, self._hook, hooks=False)
        #: When a request last reached the room or a connection left it (monotonic
        #: clock); the manager unloads a room idle for --idle-unload seconds.
        self.last_active = time.monotonic()

    def touch(self) -> None:
        self.last_active = time.monotonic()

    @property
    def name(self) -> str:
        return self.feed.name

    @property
    def failed(self) -> BaseException | None:
        return self.feed.failed

    @property
    def owned(self) -> bool:
        return self.writer is not None and not self.writer.stopped

    def submit(self, request: Request) -> None:
        writer = self.writer
        if writer is not None and not writer.stopped:
            writer.submit(request)
        elif writer is not None and writer.handing_on:
            writer.queue_behind(request)  # handed on with the rest, in order
        elif self.forward is not None:
            self.forward(self, request)
        else:
            raise RoomFailed("the room's writer stopped")

    def _hook(self, client: str, hook: Hook) -> None:
        if self.owned:
            assert self.writer is not None
            self.writer.submit_hook(client, hook)
        else:
            log.info("presence hook not run: another node owns the room", room=self.name)

    def may_record(self, client: str) -> bool:
        writer = self.writer
        return writer.may_record(client) if writer is not None else True

    @property
    def idle(self) -> bool:
        """Nothing connected, queued, in flight or within a leave grace: safe to unload."""
        feed = self.feed
        writer = self.writer
        return (
            feed.connections == 0
            and not feed.members
            and not self.presence.joined
            and (writer is None or writer.stopped or writer.idle)
        )

    async def drain(self) -> None:
        if self.writer is not None:
            await self.writer.drain()

    async def close(self) -> None:
        self.presence.close()
        try:
            if self.writer is not None and not self.writer.stopped:
                await self.writer.close()
        finally:
            if self.follower is not None:
                self.follower.closed = True
            self.feed.close()


__all__ = ["LiveRoom", "Request", "RoomFailed"]

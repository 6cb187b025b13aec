"""A room held by this process: its feed (server/feed.py), the writer that runs its
actions (server/writer.py), and who is connected to it here (server/presence.py)."""

from __future__ import annotations

import time

from statecast.server.feed import RoomFailed, RoomFeed
from statecast.server.presence import Presence
from statecast.server.writer import Request, RoomWriter


class LiveRoom:
    __slots__ = ("feed", "last_active", "presence", "writer")

    def __init__(self, feed: RoomFeed, writer: RoomWriter) -> None:
        self.feed = feed
        self.writer = writer
        hooks = writer.room.has_presence_hooks()
        self.presence = Presence(writer.config.leave_grace, writer.submit_hook, hooks=hooks)
        self.presence.seed(writer.room.present_agents())
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

    def submit(self, request: Request) -> None:
        self.writer.submit(request)

    def may_record(self, client: str) -> bool:
        return self.writer.may_record(client)

    @property
    def idle(self) -> bool:
        """Nothing connected, queued, in flight or within a leave grace: safe to unload."""
        feed = self.feed
        return (
            feed.connections == 0
            and not feed.members
            and not self.presence.joined
            and self.writer.idle
        )

    async def drain(self) -> None:
        await self.writer.drain()

    async def close(self) -> None:
        self.presence.close()
        try:
            await self.writer.close()
        finally:
            self.feed.close()


__all__ = ["LiveRoom", "Request", "RoomFailed"]

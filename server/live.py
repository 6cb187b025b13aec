"""A room held by this process: its feed (server/feed.py) and, where this process owns the
room, the writer that runs its actions (server/writer.py). In a cluster, a room another
node owns has a follower instead (server/cluster/follower.py), and its actions are
forwarded to the owner."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from statecast.server.feed import RoomFailed, RoomFeed
from statecast.server.writer import Request, RoomWriter

if TYPE_CHECKING:
    from statecast.server.cluster.follower import Follower


class LiveRoom:
    __slots__ = ("feed", "follower", "forward", "idle_since", "writer")

    def __init__(
        self,
        feed: RoomFeed,
        writer: RoomWriter | None,
        *,
        follower: Follower | None = None,
        forward: Callable[[LiveRoom, Request], None] | None = None,
    ) -> None:
        self.feed = feed
        self.writer = writer
        self.follower = follower
        self.forward = forward
        #: Loop time since which the room has had no member and no action (None: in use).
        self.idle_since: float | None = None

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
        self.idle_since = None
        writer = self.writer
        if writer is not None and not writer.stopped:
            writer.submit(request)
        elif self.forward is not None:
            self.forward(self, request)
        else:
            raise RoomFailed("the room's writer stopped")

    async def drain(self) -> None:
        if self.writer is not None:
            await self.writer.drain()

    async def close(self) -> None:
        try:
            if self.writer is not None and not self.writer.stopped:
                await self.writer.close()
        finally:
            if self.follower is not None:
                self.follower.closed = True
            self.feed.close()


__all__ = ["LiveRoom", "Request", "RoomFailed"]

"""A room held by this process: its feed (server/feed.py) and the writer that runs its
actions (server/writer.py)."""

from __future__ import annotations

from statecast.server.feed import RoomFailed, RoomFeed
from statecast.server.writer import Request, RoomWriter


class LiveRoom:
    __slots__ = ("feed", "writer")

    def __init__(self, feed: RoomFeed, writer: RoomWriter) -> None:
        self.feed = feed
        self.writer = writer

    @property
    def name(self) -> str:
        return self.feed.name

    @property
    def failed(self) -> BaseException | None:
        return self.feed.failed

    def submit(self, request: Request) -> None:
        self.writer.submit(request)

    async def drain(self) -> None:
        await self.writer.drain()

    async def close(self) -> None:
        try:
            await self.writer.close()
        finally:
            self.feed.close()


__all__ = ["LiveRoom", "Request", "RoomFailed"]

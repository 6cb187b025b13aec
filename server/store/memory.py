"""The in-memory store: the interface's reference backend; nothing survives the process."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import replace

from statecast.server.store.base import RoomRecord, RoomSummary, StoredChange, StoreUsage


class MemoryStore:
    durable = False

    def __init__(self) -> None:
        self._rooms: dict[str, RoomRecord] = {}
        self._names: list[str] = []  # sorted, so a listing page is a bisect and a slice

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def rooms(self) -> list[str]:
        return list(self._names)

    async def list_rooms(self, after: str | None, limit: int) -> list[RoomSummary]:
        start = 0 if after is None else bisect.bisect_right(self._names, after)
        return [self._summary(name) for name in self._names[start : start + limit]]

    async def room_summary(self, room: str) -> RoomSummary | None:
        return self._summary(room) if room in self._rooms else None

    def _summary(self, name: str) -> RoomSummary:
        record = self._rooms[name]
        return RoomSummary(name, record.type_name, record.epoch, record.head)

    async def usage(self) -> StoreUsage:
        """O(rooms): the memory store is for tests and trials, not for many rooms."""
        held = sum(
            len(r.checkpoint_state) + sum(len(d) for _, d in r.diffs) for r in self._rooms.values()
        )
        return StoreUsage(len(self._rooms), held)

    async def load(self, room: str) -> RoomRecord | None:
        record = self._rooms.get(room)
        if record is None:
            return None
        return _copy(record)

    async def create(self, room: str, record: RoomRecord) -> None:
        if room not in self._rooms:
            bisect.insort(self._names, room)
        self._rooms[room] = _copy(record)

    async def append(self, room: str, changes: Sequence[StoredChange]) -> None:
        record = self._rooms[room]
        for change in changes:
            if change.diff is not None:
                record.diffs.append((change.seq, change.diff))
            if change.client is not None:
                record.acked[change.client] = change.aid
                if change.answer is not None:
                    record.answers[change.client] = (change.aid, change.answer)

    async def diffs_after(self, room: str, seq: int) -> list[tuple[int, bytes]]:
        record = self._rooms.get(room)
        if record is None:
            return []
        return [(s, d) for s, d in record.diffs if s > seq]

    async def checkpoint(self, room: str, seq: int, state: bytes, acked: dict[str, int]) -> None:
        record = self._rooms[room]
        record.checkpoint_seq = seq
        record.checkpoint_state = state
        record.acked = dict(acked)
        record.diffs = [(s, d) for s, d in record.diffs if s > seq]


def _copy(record: RoomRecord) -> RoomRecord:
    return replace(
        record,
        acked=dict(record.acked),
        diffs=list(record.diffs),
        answers=dict(record.answers),
    )

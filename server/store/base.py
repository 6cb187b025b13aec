"""The storage interface, in statecast's own terms.

A store keeps, per room: the epoch, a checkpoint (the encoded state at some
seq with each client's last processed aid), and the log of diffs after it.
Loading a room is "checkpoint, then the log"; the room itself never asks a
store to do anything shaped like a particular database.

Contract (tests/server/test_store_contract.py runs it against every backend):

* ``append`` records a batch of changes atomically: each change carries the
  diff it produced (or none, for a rejected or no-op action), the client's
  new last processed aid and the handler's answer if it gave one, committed
  together, so after a crash the diff, the aid and the answer survive or vanish
  together. A client's answer is kept until a later answer of its replaces it
  (``RoomRecord.answers``); checkpoints leave answers alone. When ``append`` returns, the batch is
  as durable as the backend makes anything.
* ``load`` returns what was appended (the checkpoint plus every later diff).
* ``diffs_after`` serves replay from the log beyond what the room holds in memory.
* ``checkpoint`` may drop log entries at or below its seq.
* ``list_rooms`` and ``room_summary`` answer the room listing (``GET /rooms``)
  from what the store holds, without loading a room; see their docstrings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class StoredChange:
    """One processed action: its DIFF (None if it made none) and who sent it."""

    seq: int
    diff: bytes | None
    client: str | None
    aid: int
    #: The handler's answer, encoded (docs/protocol.md §5.8); None when it gave none.
    answer: bytes | None = None


@dataclass(slots=True)
class RoomRecord:
    epoch: str
    type_name: str
    checkpoint_seq: int
    checkpoint_state: bytes
    """The state at ``checkpoint_seq``, msgpack-encoded."""
    acked: dict[str, int] = field(default_factory=dict)
    diffs: list[tuple[int, bytes]] = field(default_factory=list)
    """Encoded DIFFs after the checkpoint, in seq order."""
    answers: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    """Per client, the last answer recorded and the aid it answered: it is the answer to
    the client's last processed aid only while that aid is ``acked[client]``."""

    @property
    def head(self) -> int:
        return self.diffs[-1][0] if self.diffs else self.checkpoint_seq


@dataclass(frozen=True, slots=True)
class RoomSummary:
    """What the store knows of a room without loading it: the listing's row."""

    room: str
    type_name: str
    epoch: str
    seq: int
    """The head: the highest seq stored (a diff in the log, else the checkpoint's)."""


@dataclass(frozen=True, slots=True)
class StoreUsage:
    rooms: int
    bytes: int


class StoreUnavailable(Exception):
    """The store cannot be reached now.

    ``sent`` is False when no attempt of the call reached the store (every one
    failed to connect): then it certainly did not happen. When True, a write
    may or may not have landed.
    """

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


class Fenced(Exception):
    """A write refused because another node now owns the room (or the log moved on)."""


class RoomLost(Exception):
    """The store no longer has the room's keys (restarted empty, or evicted)."""


class Store(Protocol):
    #: True when ``append`` returns only once the batch is durable on disk.
    durable: bool

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def rooms(self) -> list[str]: ...

    async def load(self, room: str) -> RoomRecord | None: ...

    async def create(self, room: str, record: RoomRecord) -> None: ...

    async def append(self, room: str, changes: Sequence[StoredChange]) -> None: ...

    async def diffs_after(self, room: str, seq: int) -> list[tuple[int, bytes]]: ...

    async def checkpoint(
        self, room: str, seq: int, state: bytes, acked: dict[str, int]
    ) -> None: ...

    async def list_rooms(self, after: str | None, limit: int) -> list[RoomSummary]:
        """Up to ``limit`` stored rooms whose names sort strictly after ``after`` (from the
        first when None), in name order.

        Name order is the order of the names' UTF-8 bytes (the same as code point
        order; room names are ASCII). The cost must be O(limit) plus a lookup, never
        O(rooms): an ordered index over names (SQLite's UNIQUE index, a Redis sorted
        set read with ZRANGEBYLEX ``(after``, a bisected list) and the head per room
        read in O(1) or O(log n). A call must not load a room's state or log, create
        anything, or change what the store holds. A room being created may or may not
        appear; a room appears at most once per call.
        """
        ...

    async def room_summary(self, room: str) -> RoomSummary | None:
        """The same row for one room, or None when the store does not hold it (O(1))."""
        ...

    async def usage(self) -> StoreUsage:
        """How much the store holds, for ``--max-store-bytes`` and ``--max-stored-rooms``.

        Read about once a second, so it may cost a query but not a scan of the data."""
        ...

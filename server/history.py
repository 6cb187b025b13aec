"""A room's recent diffs, already encoded, for replay to clients that resume.

Entries are the exact DIFF messages that were sent live, so a replay is a
concatenation of bytes with no re-encoding. The log is bounded by count and by
bytes; the room's epoch and head seq outlive trimmed diffs, so a client away for
too long gets a SNAPSHOT instead of an error.

The room also trims it to about its state's encoded size (:meth:`trim_to`, with
a floor of :data:`MIN_HISTORY_BYTES`): diffs beyond that cost more to replay than
a SNAPSHOT, which a resume would get instead anyway. So a small room with a long
history holds kilobytes, not ``--history-bytes``, and ten thousand of them fit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from statecast.protocol.netchange import ChangeIndex

#: Bytes of diffs a room may hold whatever its state's size (``--history-bytes`` permitting).
MIN_HISTORY_BYTES: Final = 64 * 1024


class History:
    def __init__(
        self,
        max_diffs: int = 10_000,
        max_bytes: int = 16 << 20,
        keep_changes: int = 0,
        entry_depth: int = 0,
    ) -> None:
        self.max_diffs = max_diffs
        self.max_bytes = max_bytes
        #: The net-change index over the same line of diffs (protocol/netchange.py): it
        #: outlives the diffs held here, to ``keep_changes`` seqs (--tombstone-horizon).
        self.index = ChangeIndex(0, keep_changes, entry_depth)
        self._entries: list[bytes] = []
        self._start = 0  # index of the oldest held entry in _entries
        self._first_seq = 1  # seq of _entries[_start]
        self._bytes = 0
        # _ends[i] = bytes of entries[0..i] (cumulative), so any range's size is O(1).
        self._ends: list[int] = []
        self._trimmed_bytes = 0

    def reset(self, head: int) -> None:
        """Forget everything; the next appended diff will be ``head + 1``."""
        self._entries, self._ends = [], []
        self._start, self._bytes, self._trimmed_bytes = 0, 0, 0
        self._first_seq = head + 1
        self.index = ChangeIndex(head, self.index.keep, self.index.depth)

    def __len__(self) -> int:
        return len(self._entries) - self._start

    @property
    def oldest_seq(self) -> int | None:
        return self._first_seq if len(self) else None

    @property
    def last_seq(self) -> int:
        return self._first_seq + len(self) - 1

    def append(self, seq: int, encoded: bytes) -> None:
        if seq != self.last_seq + 1:
            raise ValueError(f"history expects seq {self.last_seq + 1}, got {seq}")
        self._entries.append(encoded)
        prev = self._ends[-1] if self._ends else 0
        self._ends.append(prev + len(encoded))
        self._bytes += len(encoded)
        self._trim()

    def trim_to(self, max_bytes: int) -> None:
        """Hold at most ``max_bytes`` of diffs (and never fewer than the newest one)."""
        if self._bytes > max_bytes:
            self._trim(max_bytes)

    def _trim(self, max_bytes: int | None = None) -> None:
        limit = self.max_bytes if max_bytes is None else min(max_bytes, self.max_bytes)
        while len(self) > self.max_diffs or (self._bytes > limit and len(self) > 1):
            self._bytes -= len(self._entries[self._start])
            self._start += 1
            self._first_seq += 1
        if self._start > 1024 and self._start * 2 > len(self._entries):
            # Rebase the running totals: size_after() reads 0 before the first kept entry.
            base = self._ends[self._start - 1]
            self._entries = self._entries[self._start :]
            self._ends = [end - base for end in self._ends[self._start :]]
            self._start = 0

    def holds_after(self, seq: int) -> bool:
        """Whether every diff after ``seq`` up to the last is still held."""
        return seq + 1 >= self._first_seq and seq <= self.last_seq

    def size_after(self, seq: int) -> int:
        """Encoded bytes of the diffs after ``seq`` (requires :meth:`holds_after`)."""
        if seq >= self.last_seq:
            return 0
        i = self._start + (seq + 1 - self._first_seq)
        before = self._ends[i - 1] if i > 0 else 0
        return self._ends[-1] - before

    def after(self, seq: int, limit: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(seq, encoded DIFF) for every held diff after ``seq``, oldest first."""
        first = max(seq + 1, self._first_seq)
        i = self._start + (first - self._first_seq)
        end = len(self._entries) if limit is None else min(len(self._entries), i + limit)
        for j in range(i, end):
            yield first + (j - i), self._entries[j]

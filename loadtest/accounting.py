"""Delivered, coalesced and missed updates of drained observers, from the seqs they reached.

A drained observer (:mod:`statecast.loadtest.drain`) does not decode the updates
it reads; it logs where it got to: ``["state", s]`` when a whole state at seq
``s`` reached it (a poll's body, a SNAPSHOT), ``["run", s]`` when every DIFF up
to ``s`` reached it one by one. With the agents' ``(seq, agent, n)`` for every
applied action, that gives the same three counts the sampled observers' :class:`View`
keeps, by the same rule: seeing agent ``a`` at ``n`` delivers ``n`` if it is in
the window and coalesces away every window counter between the previous one
seen and ``n``; a run delivers each window counter it passes.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Counts:
    delivered: int = 0
    coalesced: int = 0
    missed: int = 0


class Ledger:
    """The applied actions by agent, in seq order, and each agent's window ``[lo, hi)``."""

    def __init__(
        self, actions: Iterable[Sequence[int]], windows: Sequence[tuple[int, int]]
    ) -> None:
        self.windows = list(windows)
        self.seqs: list[list[int]] = [[] for _ in self.windows]
        self.ns: list[list[int]] = [[] for _ in self.windows]
        for seq, agent, n in sorted(tuple(a) for a in actions):
            if 0 <= agent < len(self.windows):
                self.seqs[agent].append(seq)
                self.ns[agent].append(n)

    def latest(self, agent: int, seq: int) -> int:
        """The counter of ``agent``'s last action at or below ``seq`` (-1 if none)."""
        i = bisect_right(self.seqs[agent], seq)
        return self.ns[agent][i - 1] if i else -1

    def count(self, seen: Iterable[Sequence[Any]]) -> Counts:
        """The counts for one observer's log (it starts having seen nothing)."""
        counts = Counts()
        last = [-1] * len(self.windows)
        for kind, seq in seen:
            for agent, (lo, hi) in enumerate(self.windows):
                n = self.latest(agent, int(seq))
                prev = last[agent]
                if n <= prev:
                    continue
                if kind == "run":
                    counts.delivered += max(0, min(n + 1, hi) - max(prev + 1, lo))
                else:
                    counts.coalesced += max(0, min(n, hi) - max(prev + 1, lo))
                    if lo <= n < hi:
                        counts.delivered += 1
                last[agent] = n
        for agent, (lo, hi) in enumerate(self.windows):
            counts.missed += max(0, hi - max(last[agent] + 1, lo))
        return counts


def count_frames(frames: int, sent_total: int, applied: int) -> Counts:
    """A floor's drained observer: one frame per action; what it did not get, it missed.

    The floors number nothing, so a frame cannot be told from another: an
    observer that read as many frames as the agents sent got every one.
    """
    missed = min(applied, max(0, sent_total - frames))
    return Counts(delivered=applied - missed, missed=missed)

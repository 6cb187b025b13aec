"""The history checker: what every client of a cluster saw, against the final state.

Every actor appends ``"<client>-<n>"`` to the room's list ``list``, with ``n``
counting up per client, and records the outcome of each ``n``: ``("ack", seq)``
(seq None: "already processed"), ``("error", code)``, or nothing (the run ended
with it unanswered). Every client records every DIFF it received by (epoch, seq),
every DIFF it received twice, and every gap it saw while live. :func:`check`
returns every broken promise as one line, so a failure shows all of them at once:

* an action answered with a seq, or answered None, is in the final list exactly once;
* an action refused as not processed (``unavailable``, ``rate_limited``) and never
  sent again is not in it;
* an unanswered one is in it at most once; nothing is in it twice;
* each client's applied actions are in the list in the order it sent them;
* no (epoch, seq) carried two different diffs, for any two clients;
* no client saw a gap or a duplicate DIFF while live.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

#: Answers that say the action was not processed (docs/protocol.md, ERROR).
NOT_PROCESSED = ("unavailable", "rate_limited")


@dataclass
class ActorLog:
    """One acting client's outcomes by its own counter ``n``."""

    client: str
    outcomes: dict[int, tuple[str, Any] | None] = field(default_factory=dict)

    #: When (event loop time) each ACK arrived, for the unavailability figures.
    acked_at: list[float] = field(default_factory=list)

    def sent(self, n: int) -> None:
        self.outcomes.setdefault(n, None)

    def answered(self, n: int, outcome: tuple[str, Any], at: float | None = None) -> None:
        self.outcomes[n] = outcome
        if at is not None and outcome[0] == "ack":
            self.acked_at.append(at)


@dataclass
class Observed:
    """What one connection-holding client saw of the room's line of seqs."""

    name: str
    diffs: dict[tuple[str, int], bytes]
    duplicates: list[tuple[str, int]]
    gaps: list[tuple[int, int]]


@dataclass
class Tally:
    acked: int = 0
    acked_none: int = 0
    refused: int = 0
    unanswered: int = 0
    applied: int = 0


def check(
    actors: list[ActorLog], observed: list[Observed], final: list[str]
) -> tuple[list[str], Tally]:
    problems: list[str] = []
    tally = Tally(applied=len(final))
    counts = Counter(final)
    for value, count in counts.items():
        if count > 1:
            problems.append(f"applied twice: {value} is in the final state {count} times")
    positions: dict[str, list[int]] = {}
    for value in final:
        client, _, n = value.rpartition("-")
        positions.setdefault(client, []).append(int(n))
    for actor in actors:
        applied = positions.get(actor.client, [])
        if applied != sorted(applied):
            problems.append(f"out of order: {actor.client}'s actions applied as {applied}")
        present = set(applied)
        for n, outcome in sorted(actor.outcomes.items()):
            value = f"{actor.client}-{n}"
            if outcome is None:
                tally.unanswered += 1
                continue
            kind, detail = outcome
            if kind == "ack":
                tally.acked += 1
                tally.acked_none += detail is None
                if n not in present:
                    problems.append(f"lost: {value} was answered ACK {detail} and is not applied")
            elif kind == "error" and detail in NOT_PROCESSED:
                tally.refused += 1
                if n in present:
                    problems.append(f"refused but applied: {value} was answered {detail}")
        unknown = present - set(actor.outcomes)
        if unknown:
            problems.append(f"applied but never sent: {actor.client} {sorted(unknown)}")
    seen: dict[tuple[str, int], tuple[str, bytes]] = {}
    for client in observed:
        if client.gaps:
            problems.append(f"gap: {client.name} saw {client.gaps[:5]}")
        if client.duplicates:
            problems.append(f"duplicate DIFF: {client.name} got {client.duplicates[:5]} twice")
        for key, ops in client.diffs.items():
            first = seen.setdefault(key, (client.name, ops))
            if first[1] != ops:
                problems.append(
                    f"two diffs at (epoch, seq) {key}: {first[0]} and {client.name} disagree"
                )
    return problems, tally


def unavailability(
    actors: list[ActorLog], windows: list[tuple[tuple[str, ...], float, float]]
) -> dict[str, float]:
    """For each fault kind, the longest time any actor went without an ACK across a step
    that held that fault (from the step's start to the end of its quiet gap): a figure for
    the report, not a promise the test asserts (timings are a benchmark's business)."""
    worst: dict[str, float] = {}
    for kinds, start, end in windows:
        longest = 0.0
        for actor in actors:
            times = sorted(actor.acked_at)
            before = [t for t in times if t <= start]
            inside = [t for t in times if start < t <= end]
            after = [t for t in times if t > end]
            points = before[-1:] + inside + after[:1]
            longest = max([longest, *(b - a for a, b in itertools.pairwise(points))])
        for kind in kinds:
            worst[kind] = max(worst.get(kind, 0.0), longest)
    return worst

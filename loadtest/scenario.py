"""What one run is: the scenario, its timeline, and the payloads it sends.

Every run follows one timeline, in CLOCK_MONOTONIC microseconds, which is one
clock for every process on a Linux machine, so a send time stamped by an agent
in one process can be subtracted from a receive time taken in another::

    start ── warmup ── t0 ══ measured window ══ t1 ── drain ── end

Agents act on fixed deadlines ``start + phase[a] + n * period`` (never a
drifting sleep) until ``t1``; observers keep watching until ``end`` so that
every action of the window is seen. An action belongs to the window when its
*deadline* lies in ``[t0, t1)``: every process can compute that for any agent
and counter ``n``, which is what lets an observer count exactly how many
changes polling coalesced away without seeing them.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final, Literal, TypeAlias

Mode: TypeAlias = Literal["poll", "push", "floor", "raw"]
MODES: Final[tuple[Mode, ...]] = ("poll", "push", "floor", "raw")
FLOORS: Final = frozenset({"floor", "raw"})  # no room: frames rebroadcast as they come
ROOM_EXTENT: Final = 10_000  # positions are ints in [0, ROOM_EXTENT)


def now_us() -> int:
    """CLOCK_MONOTONIC in microseconds: system-wide on Linux, so comparable across processes."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


@dataclass(frozen=True, slots=True)
class Scenario:
    """One point of a sweep, for one mode."""

    mode: Mode
    agents: int = 8
    rate: float = 5.0
    spectators: int = 0
    poll_hz: float = 5.0
    entities: int = 0
    #: Entries each action changes (the agent's own and changed - 1 more), and the bytes of
    #: padding each carries: the shape of an update, the same for every run of a sweep.
    changed: int = 1
    value_bytes: int = 0
    #: Which round of a repeated sweep (``--repeat``); 0 when the sweep runs once.
    round: int = 0

    @property
    def observers(self) -> int:
        """Every agent watches the room too."""
        return self.agents + self.spectators

    @property
    def room_rate(self) -> float:
        """Changes per second in the room."""
        return self.agents * self.rate

    def label(self) -> str:
        parts = [f"S={self.spectators}", f"rate={self.rate:g}"]
        if self.mode == "poll":
            parts.append(f"P={self.poll_hz:g}")
        if self.entities and self.mode not in FLOORS:
            parts.append(f"E={self.entities}")
        if self.changed != 1:
            parts.append(f"K={self.changed}")
        if self.value_bytes:
            parts.append(f"B={self.value_bytes}")
        if self.round:
            parts.append(f"#{self.round}")
        return f"{self.mode} " + " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "observers": self.observers}


def sweep(
    modes: Sequence[Mode],
    *,
    agents: int,
    rates: Sequence[float],
    spectators: Sequence[int],
    poll_hz: Sequence[float],
    entities: Sequence[int],
    repeat: int = 1,
    changed: int = 1,
    value_bytes: int = 0,
) -> list[Scenario]:
    """Every combination, without runs that would repeat another, ``repeat`` rounds over.

    Push and the floors do not poll, so the poll rate is no dimension for them;
    the floors hold no state, so neither are entities. Runs are ordered so that the
    modes of one scenario sit next to each other. Repeated, the whole sweep runs
    again round after round, so that the modes alternate: a ratio between modes is
    taken within a round, and a machine that slows down for a while weighs on both
    sides of some ratios instead of one side of all of them.
    """
    seen: set[Scenario] = set()
    out: list[Scenario] = []
    for rate, spec, hz, ents in itertools.product(rates, spectators, poll_hz, entities):
        for mode in modes:
            s = Scenario(mode, agents, rate, spec, hz, ents, changed, value_bytes)
            if mode != "poll":
                s = replace(s, poll_hz=0.0)
            if mode in FLOORS:
                s = replace(s, entities=0)
            if s not in seen:
                seen.add(s)
                out.append(s)
    if repeat > 1:
        return [replace(s, round=r) for r in range(1, repeat + 1) for s in out]
    return out


@dataclass(frozen=True, slots=True)
class Timeline:
    """The instants of one run (CLOCK_MONOTONIC microseconds) and each agent's phase."""

    start: int
    t0: int
    t1: int
    end: int
    period: int
    phases: tuple[int, ...]

    @classmethod
    def plan(
        cls,
        *,
        begin: int,
        warmup: float,
        duration: float,
        drain: float,
        rate: float,
        agents: int,
        seed: int,
    ) -> Timeline:
        period = round(1e6 / rate)
        rng = random.Random(seed)
        phases = tuple(rng.randrange(period) for _ in range(agents))
        t0 = begin + round(warmup * 1e6)
        t1 = t0 + round(duration * 1e6)
        return cls(begin, t0, t1, t1 + round(drain * 1e6), period, phases)

    def deadline(self, agent: int, n: int) -> int:
        return self.start + self.phases[agent] + n * self.period

    def last_n(self, agent: int) -> int:
        """The last action an agent sends: the last whose deadline is before t1."""
        return self.window(agent)[1] - 1

    def window(self, agent: int) -> tuple[int, int]:
        """``[lo, hi)``: the counters ``n`` of an agent's actions that are in the window."""
        base = self.start + self.phases[agent]
        lo = max(0, math.ceil((self.t0 - base) / self.period))
        hi = max(lo, math.ceil((self.t1 - base) / self.period))
        return lo, hi

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Timeline:
        return cls(**{**data, "phases": tuple(data["phases"])})


def agent_name(index: int) -> str:
    return f"a{index}"


def agent_index(name: str) -> int | None:
    if len(name) > 1 and name[0] == "a" and name[1:].isdigit():
        return int(name[1:])
    return None


def position_ops(
    agent: int,
    n: int,
    sent_us: int,
    rng: random.Random,
    *,
    changed: int = 1,
    value_bytes: int = 0,
) -> list[Any]:
    """An agent's n-th action: a position update that carries its send time.

    ``t`` is CLOCK_MONOTONIC in microseconds (well inside the ±2^53 ints a
    state may hold); ``n`` counts the agent's actions, so an observer can tell
    how many it never saw. With ``changed`` > 1 the action also moves ``changed - 1``
    entries of its own (``agents/a3_1``, ...: names observers do not count), and
    ``value_bytes`` pads every entry with that many random hex characters (random, so
    compression does not make them free).
    """

    def value(**extra: int) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "x": rng.randrange(ROOM_EXTENT),
            "y": rng.randrange(ROOM_EXTENT),
            **extra,
        }
        if value_bytes:
            entry["pad"] = rng.randbytes((value_bytes + 1) // 2).hex()[:value_bytes]
        return entry

    name = agent_name(agent)
    ops: list[Any] = [[0, ["agents", name], value(t=sent_us, n=n)]]
    ops += [[0, ["agents", f"{name}_{j}"], value()] for j in range(1, changed)]
    return ops


def entity_ops(count: int, chunk: int = 1000) -> Iterable[list[Any]]:
    """Patches that add ``count`` never-changing entries to the room (a bigger world)."""
    rng = random.Random(count)
    yield [[0, ["world"], {}]]
    for first in range(0, count, chunk):
        yield [
            [
                0,
                ["world", f"e{i}"],
                {
                    "kind": ("tree", "rock", "well", "wall")[i % 4],
                    "x": rng.randrange(ROOM_EXTENT),
                    "y": rng.randrange(ROOM_EXTENT),
                    "hp": 100,
                },
            ]
            for i in range(first, min(count, first + chunk))
        ]


@dataclass(slots=True)
class WorkerPlan:
    """What one generator process runs; sent to it as JSON on stdin."""

    index: int
    mode: Mode
    room: str
    ws_url: str
    http_url: str
    agents: list[int]
    spectators: list[int]
    sampled: int  # the first ``sampled`` spectators decode every update; the rest are drained
    agent_count: int
    rate: float
    poll_hz: float
    seed: int
    changed: int = 1
    value_bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkerPlan:
        return cls(**data)

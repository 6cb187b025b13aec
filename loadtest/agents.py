"""Agents: each sends a position update on fixed deadlines until the window closes.

Deadlines are absolute (``start + phase + n * period``), so a slow send makes
the next one go at once instead of shifting every later action: the room sees
``rate`` actions a second per agent whatever the generator's hiccups, and how
late each one went out is measured (``lateness``), which is how a saturated
generator shows itself.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

from statecast.loadtest.measure import Counters, Histogram
from statecast.loadtest.observers import FloorObserver, PushObserver
from statecast.loadtest.scenario import Timeline, agent_name, now_us, position_ops
from statecast.loadtest.wire import HttpConnection
from statecast.protocol import codec
from statecast.protocol.sync import ActionAcked, ActionRejected


class AgentStats:
    """Actions of the window: sent, acknowledged as applied, rejected; and send lateness."""

    def __init__(self) -> None:
        self.sent = 0
        self.applied = 0
        self.rejected = 0
        self.sent_total = 0
        self.lateness = Histogram()
        self.errors: list[str] = []
        # (seq, agent, n) of every applied action, window or not: drained observers
        # only know seqs, and this maps them back to agents' counters.
        self.actions: list[tuple[int, int, int]] = []

    def to_json(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "applied": self.applied,
            "rejected": self.rejected,
            "sent_total": self.sent_total,
            "lateness": self.lateness.to_json(),
            "errors": self.errors[:10],
            "actions": self.actions,
        }


class Agent:
    """The schedule every agent shares; subclasses say how one action is sent."""

    def __init__(self, index: int, stats: AgentStats, seed: int) -> None:
        self.index = index
        self.name = agent_name(index)
        self.stats = stats
        self.rng = random.Random(seed)
        self.window = (0, 0)
        #: Entries each action changes, and the padding of each (``--changed``, ``--value-bytes``).
        self.changed = 1
        self.value_bytes = 0

    def in_window(self, n: int) -> bool:
        return self.window[0] <= n < self.window[1]

    async def run(self, timeline: Timeline) -> None:
        self.window = timeline.window(self.index)
        last = timeline.last_n(self.index)
        for n in range(last + 1):
            due = timeline.deadline(self.index, n)
            delay = due - now_us()
            if delay > 0:
                await asyncio.sleep(delay / 1e6)
            sent = now_us()
            self.stats.sent_total += 1
            if self.in_window(n):
                self.stats.sent += 1
                self.stats.lateness.add(sent - due)
            try:
                ops = position_ops(
                    self.index,
                    n,
                    sent,
                    self.rng,
                    changed=self.changed,
                    value_bytes=self.value_bytes,
                )
                await self.send(n, ops)
            except Exception as exc:
                self.stats.errors.append(f"{self.name} action {n}: {type(exc).__name__}: {exc}")

    async def send(self, n: int, ops: list[Any]) -> None:
        raise NotImplementedError


class PushAgent(Agent):
    """Acts with ACTION over its own subscription (it sees its DIFF like everyone else)."""

    def __init__(self, index: int, stats: AgentStats, seed: int, conn: PushObserver) -> None:
        super().__init__(index, stats, seed)
        self.conn = conn
        self._aids: dict[int, int] = {}
        conn.on_event = self._on_event

    async def send(self, n: int, ops: list[Any]) -> None:
        aid = self.conn.sync.act("patch", ops)
        self._aids[aid] = n
        self.conn.flush()

    def _on_event(self, event: ActionAcked | ActionRejected) -> None:
        n = self._aids.pop(event.aid, None)
        if n is None:
            return
        if isinstance(event, ActionAcked) and event.seq is not None:
            self.stats.actions.append((event.seq, self.index, n))
        if not self.in_window(n):
            return
        if isinstance(event, ActionAcked):
            self.stats.applied += 1
        else:
            self.stats.rejected += 1
            self.stats.errors.append(f"{self.name} action {n}: {event.code}: {event.message}")


class PollAgent(Agent):
    """Acts with ``POST /rooms/{room}/actions`` on a connection of its own."""

    def __init__(
        self,
        index: int,
        stats: AgentStats,
        seed: int,
        http_url: str,
        room: str,
        counters: Counters,
    ) -> None:
        super().__init__(index, stats, seed)
        self.http = HttpConnection(http_url, counters)
        self.path = f"/rooms/{room}/actions"
        self.counters = counters

    async def send(self, n: int, ops: list[Any]) -> None:
        body = json.dumps(
            {"client": self.name, "aid": n + 1, "name": "patch", "args": ops},
            separators=(",", ":"),
        ).encode()
        status, _, response = await self.http.request(
            "POST", self.path, [("Content-Type", "application/json")], body
        )
        self.counters.http_post += 1
        if status == 200:
            self.stats.actions.append((int(json.loads(response)["seq"]), self.index, n))
        if not self.in_window(n):
            return
        if status == 200:
            self.stats.applied += 1
        else:
            self.stats.rejected += 1
            self.stats.errors.append(f"{self.name} action {n}: HTTP {status} {response[:80]!r}")

    async def close(self) -> None:
        self.http.close()


class FloorAgent(Agent):
    """Sends the DIFF-shaped frame itself; the floor server just rebroadcasts it."""

    def __init__(self, index: int, stats: AgentStats, seed: int, conn: FloorObserver) -> None:
        super().__init__(index, stats, seed)
        self.conn = conn

    async def send(self, n: int, ops: list[Any]) -> None:
        assert self.conn.ws is not None
        self.conn.ws.send_now(codec.encode_diff(n + 1, ops))
        if self.in_window(n):
            self.stats.applied += 1  # the floor applies nothing and refuses nothing

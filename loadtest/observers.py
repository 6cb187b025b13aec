"""Observers: who watches the room, and how each one counts what it sees.

Every observer keeps, per agent, the last action counter ``n`` it has seen. When
it next sees agent ``a`` at ``n`` it has *delivered* that update (latency: now
minus the send time the action carries) and *coalesced away* every counter
between the two that it never saw, which is how polling loses the intermediate
positions of a busy room. Only actions whose deadline lies in the measured
window count (see :mod:`statecast.loadtest.scenario`), so the three counts add up exactly:
``delivered + coalesced + missed == observers * actions in the window``.

The three kinds differ only in how the state reaches them:

* :class:`PushObserver` drives the project's own client state machine,
  :class:`~statecast.protocol.sync.ClientSync`, over a WebSocket: HELLO, WELCOME, SNAPSHOT,
  then a DIFF per applied action.
* :class:`PollObserver` GETs ``/rooms/{room}/state`` at a fixed rate with
  ``If-None-Match``, its phase jittered so polls do not line up with writes.
* :class:`FloorObserver` reads the bare broadcast of :mod:`statecast.loadtest.floor`:
  the DIFF-shaped frames agents send, decoded with :mod:`statecast.protocol.codec`.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

from statecast.loadtest.measure import Counters, Histogram
from statecast.loadtest.scenario import Timeline, agent_index, now_us
from statecast.loadtest.wire import CountedWebSocket, HttpConnection, open_websocket
from statecast.protocol import codec
from statecast.protocol.messages import Diff
from statecast.protocol.sync import (
    ActionAcked,
    ActionRejected,
    Changed,
    ClientSync,
    Event,
    StateReplaced,
)


class Tally:
    """One generator process's account of what its observers saw."""

    def __init__(self, agent_count: int) -> None:
        self.agent_count = agent_count
        self.windows: list[tuple[int, int]] = [(0, 0)] * agent_count
        self.latency = Histogram()
        #: For every update in the window and every sampled observer: from the update's
        #: due time (its deadline in the open-loop schedule) until that observer's view
        #: first included it, whether or not the update itself was shown (a poll that skips
        #: past it includes it too). Polling's coalescing shows here, not in ``latency``.
        self.staleness = Histogram()
        #: The same, by the second of the window each update was due in (0 = the first), so
        #: that a stall in the middle of a run shows.
        self.staleness_by_second: dict[int, Histogram] = {}
        self.timeline: Timeline | None = None
        self.first: dict[tuple[int, int], int] = {}  # (agent, n) -> lowest latency seen
        self.delivered = 0
        self.coalesced = 0
        self.seen = 0  # every update seen, in the window or not (for the live display)

    def set_timeline(self, timeline: Timeline) -> None:
        self.windows = [timeline.window(a) for a in range(self.agent_count)]
        self.timeline = timeline


class View:
    """One observer's last-seen counter per agent."""

    __slots__ = ("last", "tally")

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.last = [-1] * tally.agent_count

    def see(self, agent: int, n: int, sent: int, now: int) -> bool:
        """Record that agent ``agent``'s update ``n`` is visible; False if not newer."""
        if not 0 <= agent < len(self.last):
            return False
        last = self.last[agent]
        if n <= last:
            return False
        tally = self.tally
        tally.seen += 1
        lo, hi = tally.windows[agent]
        timeline = tally.timeline
        if timeline is not None:  # every window update this view now includes, seen or not
            by_second = tally.staleness_by_second
            for k in range(max(last + 1, lo), min(n, hi - 1) + 1):
                due = timeline.deadline(agent, k)
                stale = max(0, now - due)
                tally.staleness.add(stale)
                second = (due - timeline.t0) // 1_000_000
                hist = by_second.get(second)
                if hist is None:
                    hist = by_second[second] = Histogram()
                hist.add(stale)
        skipped = min(n, hi) - max(last + 1, lo)
        if skipped > 0:
            tally.coalesced += skipped
        if lo <= n < hi:
            tally.delivered += 1
            latency = now - sent
            tally.latency.add(latency)
            key = (agent, n)
            first = tally.first.get(key)
            if first is None or latency < first:
                tally.first[key] = latency
        self.last[agent] = n
        return True

    def see_value(self, name: Any, value: Any, now: int) -> bool:
        agent = agent_index(name) if type(name) is str else None
        if agent is None or type(value) is not dict:
            return False
        n, sent = value.get("n"), value.get("t")
        if type(n) is not int or type(sent) is not int:
            return False
        return self.see(agent, n, sent, now)

    def see_state(self, state: Any, now: int) -> bool:
        """A whole state arrived (a poll's body or a SNAPSHOT): look at every agent."""
        agents = state.get("agents") if type(state) is dict else None
        if type(agents) is not dict:
            return False
        changed = False
        for name, value in agents.items():
            changed |= self.see_value(name, value, now)
        return changed

    def see_ops(self, ops: list[Any], now: int) -> None:
        for op in ops:
            if type(op) is list and len(op) == 3 and op[0] == 0:
                path = op[1]
                if type(path) is list and len(path) == 2 and path[0] == "agents":
                    self.see_value(path[1], op[2], now)

    def missed(self) -> int:
        """Window updates this observer never saw nor skipped past (counted at the end)."""
        total = 0
        for agent, (lo, hi) in enumerate(self.tally.windows):
            total += max(0, hi - max(self.last[agent] + 1, lo))
        return total


class PushObserver:
    """A WebSocket subscriber driven by ClientSync; an agent's connection is one too."""

    def __init__(self, url: str, role: str, client: str | None, tally: Tally) -> None:
        self.url = url
        self.sync = ClientSync(role="agent" if role == "agent" else "spectator", client=client)
        self.view = View(tally)
        self.ws: CountedWebSocket | None = None
        self.live = asyncio.Event()
        self.on_event: Any = None  # an agent's hook for ACK and ERROR
        self.error: str | None = None

    async def connect(self, counters: Counters, timeout: float) -> None:
        self.ws = await open_websocket(self.url, counters, timeout)
        self.ws.on_message = self._on_message
        self.sync.connect()
        self.flush()
        await asyncio.wait_for(self.live.wait(), timeout)

    def _on_message(self, data: bytes) -> None:
        now = now_us()
        try:
            self.sync.receive_frame(data)
        except Exception as exc:  # a protocol error is a finding, not a crash of the generator
            self.error = f"{type(exc).__name__}: {exc}"
            return
        for event in self.sync.events_received():
            self._event(event, now)
        self.flush()
        if self.sync.live:
            self.live.set()

    def _event(self, event: Event, now: int) -> None:
        if isinstance(event, Changed):
            self.view.see_ops(event.ops, now)
        elif isinstance(event, StateReplaced):
            self.view.see_state(event.state, now)
        elif isinstance(event, ActionAcked | ActionRejected) and self.on_event is not None:
            self.on_event(event)

    def flush(self) -> None:
        out = self.sync.data_to_send()
        if out and self.ws is not None:
            self.ws.send_now(b"".join(out))

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


class FloorObserver:
    """A connection to the bare broadcast server: every frame is a DIFF-shaped message."""

    def __init__(self, url: str, tally: Tally) -> None:
        self.url = url
        self.view = View(tally)
        self.ws: CountedWebSocket | None = None
        self.error: str | None = None

    async def connect(self, counters: Counters, timeout: float) -> None:
        self.ws = await open_websocket(self.url, counters, timeout)
        self.ws.on_message = self._on_message

    def _on_message(self, data: bytes) -> None:
        now = now_us()
        try:
            messages = codec.decode_server_frame(data)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            return
        for message in messages:
            if isinstance(message, Diff):
                self.view.see_ops(message.ops, now)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


POLL_JITTER = 0.2
CATCH_UP_US = 15_000_000
"""After the drain, observers that have not seen every update of the window keep
watching this long at most: a loaded machine delays, it should not lose."""


class PollObserver:
    """GET /state at ``hz`` with If-None-Match, on a fixed grid with jitter.

    Each observer's grid has its own random phase, and each poll lands within
    ±20% of a period of its grid point, as a timer in a browser tab does: with
    a poll rate equal to each agent's action rate, a perfectly regular poller
    would see exactly one action per agent per poll and never coalesce any,
    which no real client would.
    """

    def __init__(
        self, http_url: str, room: str, hz: float, tally: Tally, counters: Counters, seed: int
    ) -> None:
        self.http = HttpConnection(http_url, counters)
        self.path = f"/rooms/{room}/state"
        self.period = round(1e6 / hz)
        self.rng = random.Random(seed)
        self.phase = self.rng.randrange(self.period)
        self.jitter = round(self.period * POLL_JITTER)
        self.view = View(tally)
        self.counters = counters
        self.etag: str | None = None
        self.error: str | None = None

    async def connect(self, counters: Counters, timeout: float) -> None:
        """Open the connection and take the first state, as a page load would."""
        await asyncio.wait_for(self.poll(), timeout)

    def caught_up(self) -> bool:
        """Every update of the window seen (or coalesced past)."""
        return self.view.missed() == 0

    async def conditional_get(self) -> tuple[int, dict[str, str], bytes]:
        """GET the state with If-None-Match and count the answer; a status other than 200
        or 304 is this poller's error."""
        headers = [("Accept", "application/json")]
        if self.etag is not None:
            headers.append(("If-None-Match", self.etag))
        status, response_headers, body = await self.http.request("GET", self.path, headers)
        c = self.counters
        c.http_get += 1
        if status == 200:
            c.http_200 += 1
        elif status == 304:
            c.http_304 += 1
        else:
            c.http_other += 1
            self.error = f"GET {self.path}: HTTP {status}"
        return status, response_headers, body

    async def poll(self) -> None:
        status, response_headers, body = await self.conditional_get()
        now = now_us()
        if status != 200:
            return
        self.etag = response_headers.get("etag", self.etag)
        document = json.loads(body)
        if not self.view.see_state(document.get("state"), now):
            self.counters.unchanged += 1

    async def run(self, timeline: Timeline) -> None:
        k = 0
        while True:
            due = timeline.start + self.phase + k * self.period
            due += self.rng.randint(-self.jitter, self.jitter)
            if due >= timeline.end and (self.caught_up() or due >= timeline.end + CATCH_UP_US):
                return
            delay = due - now_us()
            if delay > 0:
                await asyncio.sleep(delay / 1e6)
            try:
                await self.poll()
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}"
            k += 1
            # The latest slot already due is polled at once; older ones the poll outlasted
            # are skipped (a poller does not queue up polls).
            latest = (now_us() - timeline.start - self.phase) // self.period
            if latest > k:
                self.counters.polls_skipped += latest - k
                k = latest

    async def close(self) -> None:
        self.http.close()


Observer = PushObserver | FloorObserver | PollObserver

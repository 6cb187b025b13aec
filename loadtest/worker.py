"""A load-generator process: ``python -m statecast.loadtest.worker``, driven over stdin and stdout.

The harness writes one JSON line with the :class:`~statecast.loadtest.scenario.WorkerPlan`;
the worker opens every connection of its share of agents and observers and
answers ``{"type": "ready"}``. The harness then writes the
:class:`~statecast.loadtest.scenario.Timeline` (the same one to every worker); the worker
runs it on its own uvloop, reporting ``progress`` lines twice a second, and
ends with one ``result`` line. Counters, its own CPU and its event loop's lag
are snapshotted at ``t0`` and ``t1`` by timers on the shared monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import Any

from statecast.loadtest.agents import Agent, AgentStats, FloorAgent, PollAgent, PushAgent
from statecast.loadtest.drain import DrainedPoller, Drainer, open_drained
from statecast.loadtest.measure import Counters, LoopLag, self_cpu
from statecast.loadtest.observers import (
    CATCH_UP_US,
    FloorObserver,
    Observer,
    PollObserver,
    PushObserver,
    Tally,
)
from statecast.loadtest.scenario import FLOORS, Timeline, WorkerPlan, agent_name, now_us
from statecast.loadtest.wire import negotiated

CONNECT_TIMEOUT = 30.0
CONNECT_CONCURRENCY = 50


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def read_line() -> dict[str, Any]:
    line = await asyncio.to_thread(sys.stdin.readline)
    if not line:
        raise SystemExit(1)
    data: dict[str, Any] = json.loads(line)
    return data


class Worker:
    def __init__(self, plan: WorkerPlan) -> None:
        self.plan = plan
        self.counters = Counters()
        self.tally = Tally(plan.agent_count)
        self.stats = AgentStats()
        self.observers: list[Observer] = []  # sampled: every update decoded and timed
        self.pollers: list[DrainedPoller] = []  # drained pollers
        self.to_drain: list[str] = []  # drained WebSocket spectators' URLs, still to open
        self.drainer = Drainer()
        self.agents: list[Agent] = []
        self.lag = LoopLag()
        self.marks: dict[str, dict[str, Any]] = {}

    @property
    def drain_only(self) -> bool:
        """No agent and no sampled observer: only drained connections."""
        return not self.plan.agents and self.plan.sampled == 0

    def _room_url(self, bases: str, index: int) -> str:
        """The room's URL at one of ``bases`` (comma-separated cluster nodes), by index."""
        nodes = bases.split(",")
        return f"{nodes[index % len(nodes)].rstrip('/')}/rooms/{self.plan.room}"

    def agent_url(self, agent: int) -> str:
        """Where agent ``agent`` connects: the nodes of --ws in turn."""
        return self._room_url(self.plan.ws_url, agent)

    def spectator_url(self, spectator: int) -> str:
        """Where spectator ``spectator`` connects: the nodes of --spectator-ws (else --ws)
        in turn."""
        bases = str(self.plan.extra.get("spectator_ws") or self.plan.ws_url)
        return self._room_url(bases, spectator)

    def build(self) -> None:
        p = self.plan
        for a in p.agents:
            ws_url = self.agent_url(a)
            seed = p.seed * 1000 + a
            if p.mode == "push":
                conn = PushObserver(ws_url, "agent", agent_name(a), self.tally)
                self.observers.append(conn)
                self.agents.append(PushAgent(a, self.stats, seed, conn))
            elif p.mode in FLOORS:
                floor = FloorObserver(ws_url, self.tally)
                self.observers.append(floor)
                self.agents.append(FloorAgent(a, self.stats, seed, floor))
            else:
                self.observers.append(
                    PollObserver(p.http_url, p.room, p.poll_hz, self.tally, self.counters, seed)
                )
                self.agents.append(
                    PollAgent(a, self.stats, seed, p.http_url, p.room, self.counters)
                )
        for i, s in enumerate(p.spectators):
            seed = p.seed * 1000 + 500 + s
            sampled = i < p.sampled
            if p.mode == "poll":
                kind = PollObserver if sampled else DrainedPoller
                poller = kind(p.http_url, p.room, p.poll_hz, self.tally, self.counters, seed)
                (self.observers if sampled else self.pollers).append(poller)  # type: ignore[arg-type]
            elif not sampled:
                self.to_drain.append(self.spectator_url(s))
            elif p.mode == "push":
                self.observers.append(
                    PushObserver(self.spectator_url(s), "spectator", None, self.tally)
                )
            else:
                self.observers.append(FloorObserver(self.agent_url(s), self.tally))

        for agent in self.agents:
            agent.changed, agent.value_bytes = p.changed, p.value_bytes

    async def connect(self) -> None:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        statecast = self.plan.mode not in FLOORS

        async def one(observer: Observer | DrainedPoller) -> None:
            async with gate:
                await observer.connect(self.counters, CONNECT_TIMEOUT)

        async def drained(url: str) -> None:
            async with gate:
                conn = await open_drained(url, self.counters, CONNECT_TIMEOUT, statecast=statecast)
            self.drainer.add(conn)

        await asyncio.gather(
            *(one(o) for o in [*self.observers, *self.pollers]),
            *(drained(url) for url in self.to_drain),
        )

    def mark(self, name: str) -> None:
        self.marks[name] = {
            "counters": self.counters.snapshot(),
            "cpu": self_cpu(),
            "wall": time.monotonic(),
        }
        self.lag.recording = name == "t0"

    async def run(self, timeline: Timeline) -> None:
        loop = asyncio.get_running_loop()
        self.tally.set_timeline(timeline)
        # loop.time() is time.monotonic(): CLOCK_MONOTONIC, like the timeline.
        offset = loop.time() - now_us() / 1e6
        loop.call_at(timeline.t0 / 1e6 + offset, self.mark, "t0")
        loop.call_at(timeline.t1 / 1e6 + offset, self.mark, "t1")
        self.lag.start()
        tasks = [asyncio.create_task(agent.run(timeline)) for agent in self.agents]
        pollers = [o for o in self.observers if isinstance(o, PollObserver)]
        tasks += [asyncio.create_task(o.run(timeline)) for o in pollers]
        drained = [asyncio.create_task(o.run(timeline)) for o in self.pollers]
        draining = asyncio.create_task(self.drainer.run(timeline.end + CATCH_UP_US))
        progress = asyncio.create_task(self.progress())
        try:
            await asyncio.sleep(max(0.0, (timeline.end - now_us()) / 1e6))
            if self.drain_only:
                # Drained observers cannot tell when they have everything: the harness says
                # so once the sample, served by the same server, has caught up.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(read_line(), CATCH_UP_US / 1e6 + 30)
            else:
                # Catch up: every update of the window seen, every action answered, or give up.
                for _ in range(CATCH_UP_US // 100_000):
                    if all(t.done() for t in tasks) and not any(
                        o.view.missed() for o in self.observers
                    ):
                        break
                    await asyncio.sleep(0.1)
            final = now_us()
            for poller in self.pollers:
                poller.final_after = final
            if drained:
                await asyncio.wait(drained, timeout=CATCH_UP_US / 1e6)
            draining.cancel()
            await asyncio.gather(draining, return_exceptions=True)
            await self.drainer.settle()
        finally:
            tasks += drained
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    exc = task.exception()
                    self.stats.errors.append(f"{type(exc).__name__}: {exc}")
                task.cancel()
            draining.cancel()
            progress.cancel()
            await asyncio.gather(*tasks, draining, progress, return_exceptions=True)
            await self.lag.stop()
        for conn in self.drainer.all():
            conn.finish()

    async def progress(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            c = self.counters
            emit(
                {
                    "type": "progress",
                    "worker": self.plan.index,
                    "sent": self.stats.sent_total,
                    "seen": self.tally.seen + c.frames_down,
                    "requests": c.http_get + c.http_post + c.frames_up,
                    "bytes": c.up + c.down,
                    "cpu": self_cpu(),
                }
            )

    async def close(self) -> None:
        async def one(o: Observer | DrainedPoller) -> None:
            with contextlib.suppress(Exception):
                await o.close()

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(one(o) for o in [*self.observers, *self.pollers])), 5.0
            )
        for conn in self.drainer.sockets.values():
            conn.close()
        self.drainer.close()
        for agent in self.agents:
            if isinstance(agent, PollAgent):
                await agent.close()

    def compression(self) -> dict[str, int]:
        """How many WebSocket connections negotiated what (``none``: no extension)."""
        out: dict[str, int] = {}
        names = [c.compression for c in self.drainer.all()]
        for o in self.observers:
            ws = getattr(o, "ws", None)
            if ws is not None:
                names.append(negotiated(ws.protocol.extensions))
        for name in names:
            out[name] = out.get(name, 0) + 1
        return out

    def result(self) -> dict[str, Any]:
        t0, t1 = self.marks.get("t0"), self.marks.get("t1")
        errors = [o.error for o in [*self.observers, *self.pollers] if o.error is not None]
        errors += self.drainer.errors
        window: dict[str, Any] = {}
        if t0 is not None and t1 is not None:
            wall = t1["wall"] - t0["wall"]
            window = {
                "counters": Counters.delta(t1["counters"], t0["counters"]),
                "cpu": t1["cpu"] - t0["cpu"],
                "wall": wall,
            }
        else:
            errors.append("the window marks did not fire")
        drained: list[dict[str, Any]] = [{"seen": p.seen} for p in self.pollers]
        drained += [{"seen": c.seen, "frames": c.frames} for c in self.drainer.all()]
        lost = len(self.drainer.gone)
        if lost:
            errors.append(f"{lost} drained connections were lost during the run")
        return {
            "type": "result",
            "worker": self.plan.index,
            "observers": len(self.observers) + len(self.pollers) + len(self.to_drain),
            "sampled": len(self.observers),
            "window": window,
            "delivered": self.tally.delivered,
            "coalesced": self.tally.coalesced,
            "missed": sum(o.view.missed() for o in self.observers),
            "drained": drained,
            "drained_lost": lost,
            "latency": self.tally.latency.to_json(),
            "staleness": self.tally.staleness.to_json(),
            "staleness_by_second": {
                str(k): h.to_json() for k, h in sorted(self.tally.staleness_by_second.items())
            },
            "compression": self.compression(),
            "first": [[a, n, lat] for (a, n), lat in self.tally.first.items()],
            "agents": self.stats.to_json(),
            "loop_lag": self.lag.hist.to_json(),
            "errors": (errors + self.stats.errors)[:20],
        }


async def main() -> None:
    plan = WorkerPlan.from_json(await read_line())
    worker = Worker(plan)
    worker.build()
    try:
        await worker.connect()
    except Exception as exc:
        emit({"type": "failed", "error": f"connecting: {type(exc).__name__}: {exc}"})
        await worker.close()
        return
    emit({"type": "ready", "worker": plan.index})
    go = await read_line()
    timeline = Timeline.from_json(go["timeline"])
    try:
        await worker.run(timeline)
    finally:
        await worker.close()
    emit(worker.result())


def run() -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())


if __name__ == "__main__":
    run()

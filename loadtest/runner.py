"""Running the benchmark: targets in their own processes, generators in theirs.

For each scenario and mode the harness starts a fresh target — ``python -m
server serve`` for poll and push, :mod:`statecast.loadtest.floor` for the floor — unless
``--ws``/``--http`` name a running server, then one or two generator processes
(:mod:`statecast.loadtest.worker`) with the agents and observers split between them. It
never generates load itself: its own process only keeps time, reads the
target's CPU and memory from /proc at the edges of the window, and draws the
live display.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import resource
import secrets
import signal
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from statecast.loadtest.accounting import Ledger, count_frames
from statecast.loadtest.measure import (
    ProcSample,
    cpu_between,
    machine_busy,
    read_proc,
    self_cpu,
)
from statecast.loadtest.observers import CATCH_UP_US
from statecast.loadtest.scenario import (
    FLOORS,
    Mode,
    Scenario,
    Timeline,
    WorkerPlan,
    entity_ops,
    now_us,
)

STDOUT_LIMIT = 64 << 20
START_TIMEOUT = 30.0
ROOM_CONNECTIONS_SPARE = 100


#: The per-identity quotas off: the harness plays many clients from one address, which the
#: server would count as one (server/quotas.py). Flags given after these win.
ONE_HOST = [
    "--identity-action-rate=0",
    "--identity-write-rate=0",
    "--identity-connections=0",
    "--identity-rooms-per-minute=0",
    "--room-clients-per-identity=0",
]


@dataclass
class BenchOptions:
    modes: list[Mode] = field(default_factory=lambda: ["poll", "push", "floor"])
    agents: int = 8
    rates: list[float] = field(default_factory=lambda: [5.0])
    spectators: list[int] = field(default_factory=lambda: [0, 12])
    poll_hz: list[float] = field(default_factory=lambda: [5.0])
    entities: list[int] = field(default_factory=lambda: [0])
    changed: int = 1
    value_bytes: int = 0
    duration: float = 20.0
    #: Rounds of the whole sweep (modes alternating), for ratios on a noisy machine.
    repeat: int = 1
    warmup: float = 5.0
    drain: float | None = None
    ws_url: str | None = None
    http_url: str | None = None
    server_pid: int | None = None
    #: In a cluster: the node that creates the room (its owner), other than --http's.
    owner_http: str | None = None
    #: In a cluster: the nodes the spectators connect to, comma-separated (else --ws).
    spectator_ws: str | None = None
    #: Flags added to every ``statecast serve`` the harness starts (``--server-arg``).
    server_args: list[str] = field(default_factory=list)
    workers: int = 0
    sample: int = 50
    price_per_gb: float = 0.09
    seed: int = 1
    json_path: str | None = None
    csv_path: str | None = None
    summary: bool = False
    report_dir: str | None = None
    live: bool = True
    command: str = ""


class BenchError(Exception):
    pass


# --- targets -------------------------------------------------------------------------------


def check_server_pid(pid: int, urls: list[str]) -> None:
    """Refuse a ``--server-pid`` that does not listen on the target's ports: its CPU and
    memory would be reported as the target's (a wrong PID gave 0 % and a valid-looking run).

    Linux only (/proc): elsewhere the PID is taken as given."""
    proc = Path(f"/proc/{pid}")
    if not Path("/proc/net/tcp").exists():
        return
    if not proc.exists():
        raise BenchError(f"--server-pid {pid}: no such process")
    ports = {p for p in (urlsplit(u.strip()).port for u in urls if u.strip()) if p}
    listening: set[str] = set()  # socket inodes listening on one of those ports
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) in ports:
                    listening.add(fields[9])
    try:
        held = {os.readlink(fd) for fd in (proc / "fd").iterdir()}
    except OSError:
        return  # another user's process: its sockets cannot be read, so take it as given
    if not any(f"socket:[{inode}]" in held for inode in listening):
        raise BenchError(
            f"--server-pid {pid} does not listen on the target's port(s) "
            f"{', '.join(map(str, sorted(ports)))}: give the PID of the server under load"
        )


class Target:
    """The process under load: a statecast server, the floor, or an external server."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.pid: int | None = None
        self.ws_url = ""
        self.http_url = ""
        self.external = False
        #: The flags a server the run started was given (besides ports and logging).
        self.flags: list[str] = []
        self.log: deque[str] = deque(maxlen=50)
        self._reader: asyncio.Task[None] | None = None

    async def start_server(self, scenario: Scenario, options: BenchOptions) -> None:
        if options.ws_url or options.http_url:
            if options.server_args:
                raise BenchError("--server-arg sets up a server the run starts, not --ws/--http's")
            self.external = True
            self.ws_url = ",".join(u.strip().rstrip("/") for u in (options.ws_url or "").split(","))
            self.http_url = (options.http_url or "").rstrip("/")
            self.pid = options.server_pid
            if self.pid is not None:
                check_server_pid(self.pid, [*self.ws_url.split(","), self.http_url])
            if scenario.mode == "push" and not self.ws_url:
                raise BenchError("push against a running server needs --ws")
            if not self.http_url:
                raise BenchError("a running server needs --http (rooms are set up over HTTP)")
            return
        args = [
            "--store", "memory",
            "--max-room-connections", str(scenario.observers + ROOM_CONNECTIONS_SPARE),
            "--max-connections", str(scenario.observers + 10 * ROOM_CONNECTIONS_SPARE),
        ]  # fmt: skip
        if scenario.rate * 2 > 50:
            args += ["--action-rate", str(scenario.rate * 2), "--action-burst", "200"]
        self.flags = [*args, *options.server_args]  # the user's last: they win
        await self.start_statecast(self.flags)

    async def start_statecast(self, serve_args: list[str]) -> None:
        """Start ``statecast serve`` on free loopback ports with extra flags; wait until healthy."""
        serving = await self._spawn(
            ["statecast.server", "serve", "--port", "0", "--http-port", "0", "--log-format", "json",
             *ONE_HOST, *serve_args],
            lambda d: d.get("event") == "serving",
            announces_on_stdout=False,
        )  # fmt: skip
        self.ws_url = str(serving["ws"]).removesuffix("/rooms/{room}")
        self.http_url = str(serving["http"])
        await self._healthy()

    async def start_floor(self, *, raw: bool = False) -> None:
        listening = await self._spawn(
            ["statecast.loadtest.floor", "--port", "0", *(["--raw"] if raw else [])],
            lambda d: "port" in d,
            announces_on_stdout=True,
        )
        self.ws_url = f"ws://127.0.0.1:{listening['port']}"

    async def _spawn(
        self,
        module_args: list[str],
        match: Callable[[dict[str, Any]], bool],
        *,
        announces_on_stdout: bool,
    ) -> dict[str, Any]:
        """Run ``python -m MODULE_ARGS``; return the JSON line it announces itself with.

        stderr is read for the whole run (kept for error messages), so a chatty
        target never blocks on a full pipe.
        """
        pipe, devnull = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            *module_args,
            stdin=devnull,
            stdout=pipe if announces_on_stdout else devnull,
            stderr=pipe,
            limit=STDOUT_LIMIT,
        )
        self.pid = self.proc.pid
        stream = self.proc.stdout if announces_on_stdout else self.proc.stderr
        assert stream is not None and self.proc.stderr is not None
        found = await self._wait_for(stream, match)
        self._reader = asyncio.create_task(self._drain(self.proc.stderr))
        return found

    async def _wait_for(
        self, stream: asyncio.StreamReader, match: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        async def scan() -> dict[str, Any]:
            while True:
                line = await stream.readline()
                if not line:
                    raise BenchError("the target exited: " + " | ".join(self.log))
                text = line.decode(errors="replace").strip()
                self.log.append(text)
                with contextlib.suppress(ValueError):
                    data = json.loads(text)
                    if isinstance(data, dict) and match(data):
                        return data

        try:
            return await asyncio.wait_for(scan(), START_TIMEOUT)
        except TimeoutError:
            raise BenchError("the target did not start in time: " + " | ".join(self.log)) from None

    async def _drain(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.log.append(line.decode(errors="replace").strip())

    async def _healthy(self) -> None:
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for _ in range(int(START_TIMEOUT * 10)):
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(f"{self.http_url}/healthz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise BenchError("the server never answered /healthz")

    def sample(self) -> ProcSample | None:
        return read_proc(self.pid) if self.pid is not None else None

    async def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


async def set_up_room(http_url: str, room: str, entities: int) -> None:
    """Create the room with its never-changing entities (``world``) before the run."""
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for aid, ops in enumerate(entity_ops(entities), start=1):
            body = {"client": "bench-setup", "aid": aid, "name": "patch", "args": ops}
            async with session.post(f"{http_url}/rooms/{room}/actions", json=body) as response:
                if response.status != 200:
                    text = await response.text()
                    raise BenchError(f"setting up room {room}: HTTP {response.status} {text}")


# --- generators ----------------------------------------------------------------------------


class WorkerProcess:
    def __init__(self, plan: WorkerPlan, on_progress: Callable[[dict[str, Any]], None]) -> None:
        self.plan = plan
        self.on_progress = on_progress
        self.proc: asyncio.subprocess.Process | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.result: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.stderr: deque[str] = deque(maxlen=30)
        for fut in (self.ready, self.result):  # a failure is read once, whichever is awaited
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def drain_only(self) -> bool:
        return not self.plan.agents and self.plan.sampled == 0

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "statecast.loadtest.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=STDOUT_LIMIT,
        )
        self._tasks = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]
        await self.send(self.plan.to_json())

    async def send(self, message: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(message) + "\n").encode())
        await self.proc.stdin.drain()

    def _settle(self, error: str) -> None:
        for fut in (self.ready, self.result):
            if not fut.done():
                fut.set_exception(BenchError(error))

    async def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            message = json.loads(line)
            kind = message.get("type")
            if kind == "ready" and not self.ready.done():
                self.ready.set_result(None)
            elif kind == "progress":
                self.on_progress(message)
            elif kind == "result" and not self.result.done():
                self.result.set_result(message)
            elif kind == "failed":
                self._settle(f"generator {self.plan.index}: {message.get('error')}")
        await self.proc.wait()
        self._settle(
            f"generator {self.plan.index} exited ({self.proc.returncode}): "
            + " | ".join(self.stderr)
        )

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.stderr.append(line.decode(errors="replace").rstrip())

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, BenchError, ValueError):
                await asyncio.wait_for(task, 5)


@dataclass(slots=True)
class Share:
    """One generator's part: agents, spectators, and how many of those are sampled."""

    agents: list[int] = field(default_factory=list)
    spectators: list[int] = field(default_factory=list)
    sampled: int = 0

    @property
    def size(self) -> int:
        return len(self.agents) + len(self.spectators)


SAMPLED_PER_PROCESS = 60
DRAINED_PER_PROCESS = 2000


def split(scenario: Scenario, workers: int, sample: int) -> list[Share]:
    """Agents and observers per generator process.

    The sampled observers (every agent, and spectators up to ``sample`` observers
    in all) go to one process, two past SAMPLED_PER_PROCESS, with every agent
    in the first; drained spectators go to processes of their own, so bulk reads
    never delay the sample's timestamps. ``workers`` > 0 fixes the total.
    """
    sampled = min(scenario.spectators, max(0, sample - scenario.agents))
    drained = scenario.spectators - sampled
    n_drain = 0 if drained == 0 else 1 if drained <= DRAINED_PER_PROCESS else 2
    n_sampled = 1 if scenario.agents + sampled <= SAMPLED_PER_PROCESS else 2
    if workers > 0:
        n_drain = min(n_drain, workers - 1) if workers > 1 else 0
        n_sampled = workers - n_drain
    shares = [Share() for _ in range(n_sampled)]
    shares[0].agents.extend(range(scenario.agents))
    for s in range(sampled):
        least = min(shares, key=lambda share: share.size)
        least.spectators.append(s)
    for share in shares:
        share.sampled = len(share.spectators)
    drains = [Share() for _ in range(n_drain)] or shares
    for s in range(sampled, scenario.spectators):
        least = min(drains, key=lambda share: share.size)
        least.spectators.append(s)
    return [share for share in [*shares, *drains[:n_drain]] if share.size]


# --- one run -------------------------------------------------------------------------------


ProgressHook = Callable[[str, float, dict[str, Any]], None]


def drain_seconds(scenario: Scenario, options: BenchOptions) -> float:
    if options.drain is not None:
        return options.drain
    return max(1.0, 2.0 / scenario.poll_hz) if scenario.mode == "poll" else 1.0


def new_run_id() -> str:
    """Names one invocation's rooms: ``bench-<run id>-<n>``, so they can be found and cleaned."""
    return secrets.token_hex(3)


async def run_one(
    scenario: Scenario,
    options: BenchOptions,
    seed: int,
    hook: ProgressHook | None = None,
    room: str | None = None,
) -> dict[str, Any]:
    """Run one mode of one scenario against a fresh target; return the raw measurements."""
    room = room or f"bench-{new_run_id()}-1"
    if scenario.mode in FLOORS and (options.ws_url or options.http_url):
        raise BenchError(f"{scenario.mode} runs on this machine: not with --ws/--http")
    target = Target()
    workers: list[WorkerProcess] = []
    latest: dict[int, dict[str, Any]] = {}
    phase = "starting"
    timeline: Timeline | None = None

    def report(fraction: float) -> None:
        if hook is not None:
            totals = {
                k: sum(p.get(k, 0) for p in latest.values())
                for k in ("sent", "seen", "requests", "bytes")
            }
            hook(phase, fraction, totals)

    def on_progress(message: dict[str, Any]) -> None:
        latest[int(message["worker"])] = message
        if timeline is not None:
            span = timeline.end - timeline.start
            report(min(1.0, max(0.0, (now_us() - timeline.start) / span)))

    try:
        report(0.0)
        if scenario.mode in FLOORS:
            await target.start_floor(raw=scenario.mode == "raw")
        else:
            await target.start_server(scenario, options)
            # In a cluster the node that creates the room owns it (--owner-http).
            setup_url = options.owner_http or target.http_url
            await set_up_room(setup_url, room, scenario.entities)
        phase = "connecting"
        report(0.0)
        idle_before = target.sample()
        for index, share in enumerate(split(scenario, options.workers, options.sample)):
            plan = WorkerPlan(
                index=index,
                mode=scenario.mode,
                room=room,
                ws_url=target.ws_url,
                http_url=target.http_url,
                agents=share.agents,
                spectators=share.spectators,
                sampled=share.sampled,
                agent_count=scenario.agents,
                rate=scenario.rate,
                poll_hz=scenario.poll_hz,
                seed=seed * 100 + index,
                changed=scenario.changed,
                value_bytes=scenario.value_bytes,
                extra={"spectator_ws": options.spectator_ws} if options.spectator_ws else {},
            )
            workers.append(WorkerProcess(plan, on_progress))
        await asyncio.gather(*(w.start() for w in workers))
        await asyncio.wait_for(asyncio.gather(*(w.ready for w in workers)), 120)
        idle_after = target.sample()
        timeline = Timeline.plan(
            begin=now_us() + 300_000,
            warmup=options.warmup,
            duration=options.duration,
            drain=drain_seconds(scenario, options),
            rate=scenario.rate,
            agents=scenario.agents,
            seed=seed,
        )
        await asyncio.gather(*(w.send({"timeline": timeline.to_json()}) for w in workers))
        phase = "warmup"
        samples: dict[str, dict[str, Any]] = {}
        for mark, phase_after in (("t0", "measuring"), ("t1", "draining")):
            await asyncio.sleep(max(0.0, (getattr(timeline, mark) - now_us()) / 1e6))
            samples[mark] = {
                "target": target.sample(),
                "busy": machine_busy(),
                "harness": self_cpu(),
                "clock": now_us(),
            }
            phase = phase_after
        wait = (timeline.end - now_us()) / 1e6 + CATCH_UP_US / 1e6 + 60
        sampling = [w for w in workers if not w.drain_only]
        await asyncio.wait_for(asyncio.gather(*(w.result for w in sampling)), wait)
        # The sample has everything: the drained connections were sent the same, so they
        # read what is left and report.
        await asyncio.gather(*(w.send({"finish": True}) for w in workers if w.drain_only))
        results = await asyncio.wait_for(
            asyncio.gather(*(w.result for w in workers)), CATCH_UP_US / 1e6 + 60
        )
        phase = "done"
        report(1.0)
    finally:
        for w in workers:
            await w.stop()
        await target.stop()
    before, after = samples["t0"], samples["t1"]
    server: dict[str, Any] | None = None
    if before["target"] is not None and after["target"] is not None:
        cpu, source, error = cpu_between(before["target"], after["target"])
        server = {
            "cpu": cpu,
            "cpu_source": source,
            "cpu_error": error if math.isfinite(error) else None,
            "cpu_ticks": after["target"].cpu - before["target"].cpu,
            "rss": after["target"].rss,
            "peak_rss": after["target"].peak_rss,
        }
        if idle_before is not None and idle_after is not None:
            # Every connection open, nothing sent yet: what holding them costs.
            server["idle_rss_per_connection"] = (idle_after.rss - idle_before.rss) / max(
                1, scenario.observers
            )
    account_drained(scenario, timeline, results)
    return {
        "scenario": scenario.to_json(),
        "room": room,
        "target": {
            "kind": scenario.mode if scenario.mode in FLOORS else "statecast",
            "external": target.external,
            "pid_measured": server is not None,
            "flags": target.flags,
        },
        "timeline": timeline.to_json(),
        "window_seconds": (after["clock"] - before["clock"]) / 1e6,
        "server": server,
        "machine": {
            "busy": after["busy"] - before["busy"],
            "harness_cpu": after["harness"] - before["harness"],
            "cores": os.cpu_count() or 1,
        },
        "workers": results,
    }


def account_drained(
    scenario: Scenario, timeline: Timeline | None, results: list[dict[str, Any]]
) -> None:
    """Add the drained observers' counts to their workers' (and drop their seq logs)."""
    actions = [a for w in results for a in w["agents"].pop("actions", [])]
    sent_total = sum(w["agents"]["sent_total"] for w in results)
    applied = sum(w["agents"]["applied"] for w in results)
    ledger = None
    if timeline is not None and scenario.mode not in FLOORS:
        windows = [timeline.window(a) for a in range(scenario.agents)]
        ledger = Ledger(actions, windows)
    for w in results:
        drained = w.pop("drained", [])
        for d in drained:
            if ledger is not None:
                counts = ledger.count(d["seen"])
            else:
                counts = count_frames(d.get("frames", 0), sent_total, applied)
            w["delivered"] += counts.delivered
            w["coalesced"] += counts.coalesced
            w["missed"] += counts.missed
        w["drained"] = len(drained)


def raise_nofile() -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def run_all(
    options: BenchOptions,
    scenarios: list[Scenario],
    on_start: Callable[[int, Scenario], ProgressHook | None] | None = None,
    on_done: Callable[[int, Scenario, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    runs = []
    raise_nofile()
    run_id = new_run_id()
    for i, scenario in enumerate(scenarios):
        hook = on_start(i, scenario) if on_start is not None else None
        try:
            room = f"bench-{run_id}-{i + 1}"
            raw = await run_one(scenario, options, options.seed + i, hook, room)
        except Exception as exc:  # one failed run is reported, the sweep goes on
            raw = {
                "scenario": scenario.to_json(),
                "room": room,
                "failed": f"{type(exc).__name__}: {exc}",
            }
        runs.append(raw)
        if on_done is not None:
            on_done(i, scenario, raw)
    return runs

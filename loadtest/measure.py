"""Measuring tools: a mergeable latency histogram, byte counters, /proc readings, loop lag.

Latencies go into a log-bucketed histogram (64 buckets per power of two, so a
percentile is exact to within 1.6%) rather than a list of samples: a thousand
observers times forty changes a second would otherwise ship megabytes from each
generator process, and histograms from several processes simply add up.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import resource
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final

SUB_BITS: Final = 6
SUB: Final = 1 << SUB_BITS
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")


def bucket_of(value: int) -> int:
    """The bucket of a non-negative int: exact below 128, then 64 buckets per octave."""
    if value < 2 * SUB:
        return max(0, value)
    shift = value.bit_length() - SUB_BITS - 1
    return 2 * SUB + (shift - 1) * SUB + ((value >> shift) - SUB)


def bucket_bounds(index: int) -> tuple[int, int]:
    """``[low, high]``: the values a bucket holds."""
    if index < 2 * SUB:
        return index, index
    shift, mantissa = divmod(index - 2 * SUB, SUB)
    shift += 1
    low = (SUB + mantissa) << shift
    return low, low + (1 << shift) - 1


class Histogram:
    """Counts of non-negative ints (microseconds) in log buckets; merges by adding."""

    __slots__ = ("buckets", "count", "max", "total")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0
        self.max = 0

    def add(self, value: int) -> None:
        value = max(0, value)
        b = bucket_of(value)
        self.buckets[b] = self.buckets.get(b, 0) + 1
        self.count += 1
        self.total += value
        if value > self.max:
            self.max = value

    def merge(self, other: Histogram) -> None:
        for b, n in other.buckets.items():
            self.buckets[b] = self.buckets.get(b, 0) + n
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)

    def percentile(self, p: float) -> float | None:
        """The value below which ``p`` percent of the samples lie (bucket midpoint)."""
        if self.count == 0:
            return None
        rank = max(1, round(self.count * p / 100))
        seen = 0
        for b in sorted(self.buckets):
            seen += self.buckets[b]
            if seen >= rank:
                low, high = bucket_bounds(b)
                return min(float(self.max), (low + high) / 2)
        return float(self.max)

    def cdf(self) -> list[tuple[float, float]]:
        """(value, fraction of samples at or below it) per bucket, for plotting."""
        out = []
        seen = 0
        for b in sorted(self.buckets):
            seen += self.buckets[b]
            out.append((float(min(bucket_bounds(b)[1], self.max)), seen / self.count))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "buckets": {str(b): n for b, n in self.buckets.items()},
            "count": self.count,
            "total": self.total,
            "max": self.max,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Histogram:
        h = cls()
        h.buckets = {int(b): int(n) for b, n in data["buckets"].items()}
        h.count, h.total, h.max = int(data["count"]), int(data["total"]), int(data["max"])
        return h

    @classmethod
    def merged(cls, parts: Iterable[Histogram]) -> Histogram:
        h = cls()
        for part in parts:
            h.merge(part)
        return h


@dataclass(slots=True)
class Counters:
    """What one generator process's sockets carried, and what its requests got back.

    ``up`` and ``down`` are bytes handed to and received from the kernel on every
    socket the generator owns, HTTP headers, WebSocket handshakes, framing,
    pings and pongs included (TCP/IP headers are not: they are the same for
    both modes per segment, and polling sends more segments).
    """

    up: int = 0
    down: int = 0
    frames_up: int = 0
    frames_down: int = 0
    http_get: int = 0
    http_post: int = 0
    http_200: int = 0
    http_304: int = 0
    http_other: int = 0
    unchanged: int = 0  # a 200 whose body showed no agent further along
    polls_skipped: int = 0  # a poll deadline passed while the previous poll was in flight

    def snapshot(self) -> dict[str, int]:
        return asdict(self)

    @staticmethod
    def delta(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
        return {k: after[k] - before.get(k, 0) for k in after}


@dataclass(frozen=True, slots=True)
class ProcSample:
    """One process's CPU seconds and resident memory, read from /proc.

    ``cpu`` counts in clock ticks (10 ms at 100 Hz): over a short window, or for a nearly
    idle target, that is too coarse (two ticks of error on 0.05 s is 40%). ``cpu_ns`` is
    the sum over the process's threads of /proc/PID/task/TID/schedstat's run time, in
    nanoseconds (None where the kernel has no schedstat); :func:`cpu_between` chooses.
    """

    cpu: float
    rss: int
    peak_rss: int
    cpu_ns: int | None = None


#: A CPU figure whose tick quantisation (two ticks: one at each edge) exceeds this share of
#: it is marked as such.
TICK_ERROR_BAR: Final = 0.10


def cpu_between(before: ProcSample, after: ProcSample) -> tuple[float, str, float]:
    """CPU seconds between two samples, where they come from, and their relative error bound.

    The schedstat sum is nanosecond-exact for the threads alive at both readings; a thread
    that ended in between takes its run time with it (its ticks stay in the process's
    utime + stime). So schedstat is used unless the tick count exceeds it by more than
    the ticks' own error, which says time was lost.
    """
    ticks = after.cpu - before.cpu
    tick = 1 / CLOCK_TICKS
    if before.cpu_ns is not None and after.cpu_ns is not None:
        exact = (after.cpu_ns - before.cpu_ns) / 1e9
        if ticks <= exact + 2 * tick:
            return exact, "schedstat", 0.0
    return ticks, "ticks", (2 * tick / ticks if ticks > 0 else math.inf)


def _schedstat_ns(pid: int) -> int | None:
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            if tid == str(pid):
                return None  # no schedstat at all (a kernel without it)
    return total


def read_proc(pid: int) -> ProcSample | None:
    """CPU (utime + stime, /proc/PID/stat, and the threads' schedstat run time) and RSS
    (/proc/PID/status), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode()
        with open(f"/proc/{pid}/status", "rb") as f:
            status = f.read().decode()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    mem = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            mem[key] = int(value.split()[0]) * 1024
    return ProcSample(cpu, mem.get("VmRSS", 0), mem.get("VmHWM", 0), _schedstat_ns(pid))


def machine_busy() -> float:
    """CPU seconds all cores spent busy since boot (from /proc/stat)."""
    with open("/proc/stat", "rb") as f:
        fields = f.readline().split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / CLOCK_TICKS


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class LoopLag:
    """How late the event loop wakes a timer: a generator that cannot keep up shows it here."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.hist = Histogram()
        self.recording = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            if self.recording:
                self.hist.add(round((loop.time() - due) * 1e6))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

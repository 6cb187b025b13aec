"""``statecast serve --workers N``: N server processes on one machine sharing its ports.

Each worker is an ordinary ``statecast serve`` bound with SO_REUSEPORT, so the
kernel spreads new connections over them and one machine uses all its cores.
They must share a store that is a cluster's (Redis): a room is then owned by one
worker and followed by the others, whichever worker a client lands on. The
supervisor restarts a worker that dies, and on SIGTERM/SIGINT passes the signal
on and waits for every worker's graceful stop.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

import structlog

from statecast.server.config import Config

log = structlog.get_logger()

RESTART_BACKOFF_MAX = 5.0
STOP_TIMEOUT = 30.0


def refusal(config: Config) -> str | None:
    """Why ``config`` cannot run several workers, or None."""
    if config.workers <= 1:
        return None
    if not config.store.startswith(("redis://", "rediss://")):
        return (
            "--workers above 1 needs a shared store: --store redis://HOST:PORT/DB "
            "(with memory or SQLite each worker would hold rooms of its own)"
        )
    if config.port == 0 or config.http_port == 0:
        return "--workers above 1 needs fixed ports (the workers share them)"
    return None


def supervise(config: Config, argv: Sequence[str]) -> int:
    """Run ``config.workers`` workers of ``statecast serve *argv`` until told to stop."""
    env = {**os.environ, "STATECAST_WORKERS": "1", "STATECAST_REUSE_PORT": "1"}
    command = [sys.executable, "-m", "statecast.server", "serve", *argv]
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    workers: list[subprocess.Popen[bytes] | None] = [None] * config.workers
    restarts = [0] * config.workers
    next_start = [0.0] * config.workers
    while not stopping:
        now = time.monotonic()
        for i, worker in enumerate(workers):
            if worker is not None and worker.poll() is None:
                continue
            if worker is not None:
                log.warning("worker died: restarting it", worker=i, code=worker.returncode)
                restarts[i] += 1
                delay = min(RESTART_BACKOFF_MAX, 0.1 * 2 ** min(restarts[i], 6))
                next_start[i] = now + delay
                workers[i] = None
            if now >= next_start[i]:
                workers[i] = subprocess.Popen(command, env=env)
                log.info("worker started", worker=i, pid=workers[i].pid)  # type: ignore[union-attr]
        time.sleep(0.1)
    for worker in workers:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for worker in workers:
        if worker is None:
            continue
        try:
            worker.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    log.info("workers stopped")
    return 0

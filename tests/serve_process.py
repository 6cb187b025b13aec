"""``statecast serve`` as a user runs it: the installed console script, in a directory of choice.

The console script matters: Python puts the script's own directory first on
``sys.path``, not the current one (``python -m`` would put the current one), so
only the script shows what a user who types ``statecast serve`` gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import TIMEOUT

STATECAST = Path(sys.executable).with_name("statecast")


@dataclass
class ServeProcess:
    proc: asyncio.subprocess.Process
    ws_url: str
    http_url: str
    log: list[dict[str, Any]] = field(default_factory=list)


async def run_serve(*args: str, cwd: Path) -> tuple[int, str]:
    """Run ``statecast serve ARGS`` that is expected to exit; its exit code and stderr."""
    proc = await asyncio.create_subprocess_exec(
        str(STATECAST), "serve", "--port=0", "--http-port=0", *args,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, err = await asyncio.wait_for(proc.communicate(), TIMEOUT * 4)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


@contextlib.asynccontextmanager
async def serve_process(*args: str, cwd: Path) -> AsyncIterator[ServeProcess]:
    """``statecast serve`` on 127.0.0.1, free ports, in ``cwd``; killed when the block ends."""
    assert STATECAST.exists(), f"{STATECAST} is missing: install statecast (make install)"
    proc = await asyncio.create_subprocess_exec(
        str(STATECAST), "serve", "--host=127.0.0.1", "--port=0", "--http-port=0",
        "--store=memory", "--log-format=json", *args,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    log: list[dict[str, Any]] = []
    serving: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def read(stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"event": raw.decode(errors="replace").rstrip()}
            log.append(line)
            if line.get("event") == "serving" and not serving.done():
                serving.set_result(line)
        if not serving.done():
            serving.set_exception(RuntimeError(f"statecast serve exited before serving: {log}"))

    reader = asyncio.create_task(read(proc.stderr))
    try:
        ready = await asyncio.wait_for(serving, TIMEOUT * 4)
        ws = str(ready["ws"]).removesuffix("/rooms/{room}")
        yield ServeProcess(proc, ws, str(ready["http"]), log)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader

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

from tests.helpers import ONE_HOST_FLAGS, TIMEOUT

STATECAST = Path(sys.executable).with_name("statecast")


@dataclass
class ServeProcess:
    proc: asyncio.subprocess.Process
    ws_url: str
    http_url: str
    log: list[dict[str, Any]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    def room_url(self, room: str) -> str:
        return f"{self.ws_url}/rooms/{room}"

    async def stop(self, sig: int) -> int:
        """Send ``sig`` and wait for the process to end; its exit code."""
        self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), TIMEOUT * 3)
        if self.reader is not None:
            await asyncio.wait_for(self.reader, TIMEOUT)
        return code


async def run_to_end(
    *command: str, cwd: Path, timeout: float, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run ``command`` until it exits (killed after ``timeout``); its exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def run_serve(*args: str, cwd: Path) -> tuple[int, str]:
    """Run ``statecast serve ARGS`` that is expected to exit; its exit code and stderr."""
    code, _, err = await run_to_end(
        str(STATECAST),
        "serve",
        "--port=0",
        "--http-port=0",
        *ONE_HOST_FLAGS,
        *args,
        cwd=cwd,
        timeout=TIMEOUT * 4,
    )
    return code, err


async def start_serve(*args: str, cwd: Path) -> ServeProcess:
    """Start ``statecast serve`` on 127.0.0.1, free ports, in ``cwd``; return once it serves.

    The ports come from its JSON ``serving`` log line; every log line is kept in ``log``.
    """
    assert STATECAST.exists(), f"{STATECAST} is missing: install statecast (make install)"
    proc = await asyncio.create_subprocess_exec(
        str(STATECAST), "serve", "--host=127.0.0.1", "--port=0", "--http-port=0",
        "--store=memory", "--log-format=json", *ONE_HOST_FLAGS, *args,
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
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        reader.cancel()
        raise
    ws = str(ready["ws"]).removesuffix("/rooms/{room}")
    return ServeProcess(proc, ws, str(ready["http"]), log, reader)


@contextlib.asynccontextmanager
async def serve_process(*args: str, cwd: Path) -> AsyncIterator[ServeProcess]:
    """``statecast serve`` (see :func:`start_serve`), killed when the block ends unless the
    test stopped it."""
    server = await start_serve(*args, cwd=cwd)
    try:
        yield server
    finally:
        if server.proc.returncode is None:
            server.proc.kill()
        await server.proc.wait()
        if server.reader is not None:
            server.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await server.reader

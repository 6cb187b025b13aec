"""What a user installs is what is tested: run by `make wheel-check` with the Python of a
clean venv that holds only the built wheel and its locked dependencies, from a directory
outside the repository (so nothing is imported from the source tree).

It checks that the public API imports, the Redis scripts and the browser files ship as
package data, that `statecast mcp` is there and says how to install its extra, and that
the installed `statecast serve` starts, serves statecast.js, and applies an agent's action.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path


async def act(ws: str) -> None:
    from statecast import connect

    async with connect(f"{ws}/rooms/wheel", client="a") as room:
        assert await room.act("patch", [[0, ["ok"], True]]) == 1
        assert room.state == {"ok": True}


def main() -> None:
    import statecast
    from statecast import ActionContext, Rejection, Room, action
    from statecast.server.store import redis as redis_store

    where = Path(statecast.__file__).resolve()
    assert "site-packages" in where.parts, f"statecast imported from {where}, not the wheel"
    for script in ("append", "create", "checkpoint", "acquire", "renew", "release", "hello"):
        assert "redis.call" in redis_store._script(script), script
    assert Room and action and ActionContext and Rejection

    binary = str(Path(sys.executable).with_name("statecast"))
    # The MCP server ships in the wheel; without the `mcp` extra its command says so.
    import statecast.mcp_server.cli

    mcp = subprocess.run(
        [binary, "mcp", "--url", "ws://127.0.0.1:1", "--room", "r", "--client", "c"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert mcp.returncode == 2 and "pip install 'statecast[mcp]'" in mcp.stderr, mcp
    proc = subprocess.Popen(
        [binary, "serve", "--store=memory", "--port=0", "--http-port=0", "--log-format=json"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        serving = None
        for line in proc.stderr:
            event = json.loads(line)
            if event.get("event") == "serving":
                serving = event
                break
        assert serving is not None, "statecast serve exited before serving"
        http, ws = serving["http"], serving["ws"].removesuffix("/rooms/{room}")
        with urllib.request.urlopen(f"{http}/static/statecast.js", timeout=10) as response:
            body = response.read().decode()
            assert response.status == 200 and "export function connect" in body
        asyncio.run(act(ws))
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    print(f"wheel check: statecast {where.parent} serves and acts (pid {os.getpid()})")


if __name__ == "__main__":
    main()

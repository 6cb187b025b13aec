"""statecast.js in Node 20+ against a real server: a client started before the server retries
(Node's WebSocket fires only ``error`` then), acts, and survives a drop exactly once; a
spectator back after many diffs catches up by one PATCH (docs/protocol.md §5.11)."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

from statecast.server.app import App
from statecast.server.config import Config
from tests.helpers import TIMEOUT, http_session
from tests.js.test_js import node_binary

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def node_websocket_flags(node: str) -> list[str]:
    """Node 22+ has a global WebSocket; Node 20 needs --experimental-websocket."""
    probe = await asyncio.create_subprocess_exec(
        node, "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"
    )
    return [] if await probe.wait() == 0 else ["--experimental-websocket"]


async def test_node_client_waits_for_the_server_then_acts_exactly_once() -> None:
    """Started while nothing listens, the client keeps retrying; once the server is up it
    acts, gets its rejection code, and ten actions pending across a drop apply once each."""
    node = node_binary()
    port = free_port()
    url = f"ws://127.0.0.1:{port}/rooms/from-node"
    script = [node, *await node_websocket_flags(node), str(HERE / "live_client.mjs"), url]
    proc = await asyncio.create_subprocess_exec(
        *script, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(4 * TIMEOUT):  # three attempts fail: nothing listens yet
            while (await proc.stderr.readline()).strip() != b"attempt 3":
                assert proc.returncode is None
        app = App(Config(host="127.0.0.1", port=port, http_port=0, store="memory"))
        ports = await app.start()
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 4 * TIMEOUT)
            assert proc.returncode == 0, err.decode()[-3000:]
            result = json.loads(out.decode().strip().splitlines()[-1])
            async with http_session() as http:
                state_url = f"http://127.0.0.1:{ports.http}/rooms/from-node/state"
                async with http.get(state_url) as resp:
                    served = (await resp.json())["state"]
        finally:
            await app.stop()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert result["attemptsBeforeUp"] >= 2  # the third may meet the server
    assert result["seq"] == 1 and result["rejected"] == "invalid"
    assert result["reconnects"] == 1
    assert all(o is None or isinstance(o, int) for o in result["outcomes"])
    assert served == result["state"] == {"list": list(range(10)), "big": 2**53 - 1}
    # Back after 60 diffs to one entry: one PATCH, one "change" with one op, the same state.
    patch = result["patch"]
    assert patch["lastSync"] == "patch" and patch["patches"] == 1 and patch["same"]
    assert patch["changes"] == [{"seq": 61, "ops": 1}]

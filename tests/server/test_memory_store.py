"""--store memory as a user runs it: a real process, stopped and started again."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import bare
from tests.serve_process import serve_process


async def test_a_memory_store_keeps_nothing_across_a_real_restart(tmp_path: Path) -> None:
    """--store memory: nothing survives the process. A real `statecast serve --store memory`
    is stopped and started again: the room's agent, resuming from (epoch, 1), gets a new
    epoch and a SNAPSHOT of the empty new room, never a replay of the old one."""
    import signal

    async with serve_process("--store=memory", cwd=tmp_path) as first:
        async with bare(f"{first.ws_url}/rooms/volatile") as agent:
            welcome = await agent.hello("agent", client="a")
            await agent.recv()
            await agent.send([4, 1, "patch", [[0, ["kept"], True]]])
            assert (await agent.recv())[:2] == [5, 1]
        epoch = welcome["epoch"]
        assert await first.stop(signal.SIGTERM) == 0
    async with (
        serve_process("--store=memory", cwd=tmp_path) as second,
        bare(f"{second.ws_url}/rooms/volatile") as agent,
    ):
        welcome = await agent.hello("agent", client="a", resume=[epoch, 1])
        assert welcome["epoch"] != epoch and welcome["sync"] == "snapshot"
        assert welcome["seq"] == 0 and welcome["acked"] == 0
        assert await agent.recv() == [3, welcome["epoch"], 0, {}]

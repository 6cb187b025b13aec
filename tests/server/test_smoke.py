"""A first end-to-end check: join, act, observe, resume."""

from __future__ import annotations

from tests.helpers import RunningServer, bare


async def test_agent_action_reaches_spectator_and_acks_after_diff(server: RunningServer) -> None:
    """An applied action's DIFF reaches every subscriber, and the actor gets DIFF then ACK."""
    async with bare(server.room_url("smoke")) as agent, bare(server.room_url("smoke")) as spec:
        welcome = await agent.hello("agent", client="a1")
        assert welcome["sync"] == "snapshot" and welcome["seq"] == 0 and welcome["acked"] == 0
        assert await agent.recv() == [3, welcome["epoch"], 0, {}]
        await spec.hello("spectator")
        await spec.recv_type(3)
        await agent.send([4, 1, "patch", [[0, ["x"], 1]]])
        assert await agent.recv() == [5, 1, [[0, ["x"], 1]]]
        assert await agent.recv() == [7, 1, 1]
        assert await spec.recv() == [5, 1, [[0, ["x"], 1]]]

"""An agent: joins the room "lobby" as bot-1 and moves its piece one step to the right."""

import asyncio
import os
import sys

from statecast import Rejection, connect

URL = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("STATECAST_URL", "ws://127.0.0.1:8765")


async def main() -> None:
    # token= is needed only when the server runs with --auth jwt (docs/operations.md).
    token = os.environ.get("STATECAST_TOKEN")
    async with connect(f"{URL}/rooms/lobby", client="bot-1", token=token) as room:
        me = room.state.get("bots", {}).get("bot-1", {"x": 0, "y": 0})
        step = {"x": me["x"] + 1, "y": me["y"]}
        seq = await room.act("patch", [[0, ["bots", "bot-1"], step]])
        print("applied as diff", seq, "state:", room.state)
        try:
            await room.act("patch", [[1, ["no-such-key"]]])
        except Rejection as exc:
            print("refused:", exc.code, exc.message)


asyncio.run(main())

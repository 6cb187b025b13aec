"""An agent in a room of the Counter type (mypackage/rooms.py): adds 1, then is refused."""

import asyncio
import os
import sys

from statecast import Rejection, connect

URL = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("STATECAST_URL", "ws://127.0.0.1:8765")


async def main() -> None:
    async with connect(f"{URL}/rooms/counter-1", client="counter-bot") as room:
        print("n =", room.state["n"])
        await room.act("add", 1)
        print("n =", room.state["n"])
        try:
            await room.act("add", -5)
        except Rejection as exc:
            print("refused:", exc.code, exc.message)


asyncio.run(main())

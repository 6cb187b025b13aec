"""An agent on a TaskBoard (mypackage/tasks.py): claims tasks until none is left."""

import asyncio
import os
import sys

from statecast import Rejection, connect

URL = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("STATECAST_URL", "ws://127.0.0.1:8765")


async def main() -> None:
    async with connect(f"{URL}/rooms/board-1", client="worker-1") as room:
        while True:
            try:
                task = await room.call("claim", None)
            except Rejection as exc:
                print("refused:", exc.code, exc.message)
                break
            print("claimed", task, "at seq", room.seq)


asyncio.run(main())

"""A spectator: prints the room "lobby" as it is, then every change, until Ctrl-C."""

import asyncio
import contextlib
import os
import sys

from statecast import ServerClosed, connect

URL = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("STATECAST_URL", "ws://127.0.0.1:8765")


async def main() -> None:
    while True:
        try:
            async with connect(f"{URL}/rooms/lobby", role="spectator") as room:
                print("state at seq", room.seq, room.state)
                # changes() yields what arrives from this call on; earlier ones are in room.state.
                async for change in room.changes():
                    print(change, "->", room.state)
        except ServerClosed as exc:
            if exc.code != 4004:  # 4004: no such room (spectators never create one)
                raise
            print("no room lobby yet: waiting for an agent to create it (examples/agent.py)")
            await asyncio.sleep(0.5)


with contextlib.suppress(KeyboardInterrupt):
    asyncio.run(main())

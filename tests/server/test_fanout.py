"""The fan-out's bookkeeping of members, seen from outside: what leaves is let go."""

from __future__ import annotations

import gc
import weakref

from tests.helpers import bare, eventually, running_server
from tests.server.test_protocol_messages import bystander, joined


async def test_spectators_that_come_and_go_in_a_quiet_room_are_let_go() -> None:
    """A room that publishes nothing while spectators join and leave keeps none of
    their connections alive: each one's memory is freed when it leaves, not at the
    room's next diff."""
    async with running_server() as server:
        listener = server.app.ws.server
        assert listener is not None
        room = "quiet"
        async with bystander(server, room) as by:
            await by.served()
            gone: list[weakref.ref[object]] = []
            for _ in range(20):
                before = set(listener.connections)
                async with joined(server, room, "spectator"):
                    new = set(listener.connections) - before
                    assert len(new) == 1
                    gone.extend(weakref.ref(conn) for conn in new)
                    del new

            def all_freed() -> bool:
                gc.collect()
                return all(ref() is None for ref in gone)

            await eventually(all_freed)
            # And the room still serves: the next diff reaches a new spectator.
            async with bare(server.room_url(room)) as watcher:
                await watcher.hello("spectator")
                await watcher.recv()  # its SNAPSHOT
                seq = await by.served()
                diff = await watcher.recv()
                assert diff[0] == 5 and diff[1] == seq

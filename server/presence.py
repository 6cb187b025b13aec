"""Who is in a room, on this node: live agent connections, the leave grace, spectator counts.

The room's state learns about presence only through the room type's
``on_join`` / ``on_leave`` hooks, which the room's worker runs in order with
actions: this module decides *when* a hook is due and hands it to ``enqueue``.

* One live connection per agent client id (docs/protocol.md §8.5, close 4009): a HELLO
  for an id that is connected takes over; the caller closes the older
  connection with 4009. A takeover is neither a leave nor a join.
* An agent whose connection ends has ``grace`` seconds to come back; a
  reconnect within it is neither a leave nor a join. Past it, ``on_leave``.
* Spectators are counted, never announced.

HTTP actions have no connection and never count as presence.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Literal

from statecast.server.fanout import Subscriber

Hook = Literal["join", "leave"]


class Presence:
    def __init__(
        self, grace: float, enqueue: Callable[[str, Hook], None], *, hooks: bool = True
    ) -> None:
        self.grace = grace
        self.enqueue = enqueue
        #: False when the room type has no hooks: then only connections are tracked.
        self.hooks = hooks
        #: The live connection of each agent client id.
        self.connected: dict[str, Subscriber] = {}
        #: Agents whose on_join has been queued and whose on_leave has not.
        self.joined: set[str] = set()
        self.spectators = 0
        self._timers: dict[str, asyncio.TimerHandle] = {}

    @property
    def agents(self) -> list[str]:
        """The agents present: connected, or (with hooks) joined and within their leave grace."""
        return sorted(self.connected.keys() | self.joined)

    def seed(self, agents: Iterable[str]) -> None:
        """Agents the loaded state records as present: each gets the grace to reconnect."""
        if not self.hooks:
            return
        for client in agents:
            if client not in self.joined:
                self.joined.add(client)
                self._start_grace(client)

    def arrive(self, sub: Subscriber) -> Subscriber | None:
        """A connection joined; return the older connection of the same agent it takes over."""
        if sub.role != "agent" or sub.client is None:
            self.spectators += 1
            return None
        client = sub.client
        older = self.connected.get(client)
        self.connected[client] = sub
        if older is not None:
            return older
        timer = self._timers.pop(client, None)
        if timer is not None:
            timer.cancel()  # back within the grace
        elif self.hooks and client not in self.joined:
            self.joined.add(client)
            self.enqueue(client, "join")
        return None

    def depart(self, sub: Subscriber) -> None:
        """A connection that :meth:`arrive` counted has ended."""
        if sub.role != "agent" or sub.client is None:
            self.spectators -= 1
            return
        if self.connected.get(sub.client) is not sub:
            return  # taken over: the newer connection is the agent now
        del self.connected[sub.client]
        if sub.client in self.joined:
            self._start_grace(sub.client)

    def is_current(self, sub: Subscriber) -> bool:
        """Whether ``sub`` is still its agent's live connection (not taken over)."""
        return sub.client is not None and self.connected.get(sub.client) is sub

    def _start_grace(self, client: str) -> None:
        if self.grace <= 0:
            self._leave(client)
            return
        loop = asyncio.get_running_loop()
        self._timers[client] = loop.call_later(self.grace, self._leave, client)

    def _leave(self, client: str) -> None:
        self._timers.pop(client, None)
        if client in self.connected or client not in self.joined:
            return
        self.joined.discard(client)
        self.enqueue(client, "leave")

    def close(self) -> None:
        """Cancel pending leaves (the room is unloading: they run after the next load)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

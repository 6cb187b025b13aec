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
* In a cluster, agents connected on other nodes are known by what those nodes
  announce (server/cluster/node.py): each arrival and departure, and a roster
  of their agents every third of the lease TTL. An agent is present while it is
  connected on any node; only the owner's presence runs hooks, so the owner
  keeps the grace timers for every agent of the room. A node whose roster stops
  coming (it died) has its agents depart.

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
        #: Agents connected on other nodes: client -> (node, HELLO number, when last heard).
        self.elsewhere: dict[str, tuple[str, int, float]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        #: Called when :attr:`local` or the spectator count changes (a cluster shares them).
        self.changed: Callable[[], None] = lambda: None

    @property
    def agents(self) -> list[str]:
        """The agents present: connected, or (with hooks) joined and within their leave grace."""
        return sorted(self.connected.keys() | self.elsewhere.keys() | self.joined)

    @property
    def local(self) -> list[str]:
        """The agents present through this node: connected here, or joined (the owner's)."""
        return sorted(self.connected.keys() | self.joined)

    def _here(self, client: str) -> bool:
        return client in self.connected or client in self.elsewhere

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
            self.changed()
            return None
        client = sub.client
        older = self.connected.get(client)
        self.connected[client] = sub
        if older is not None:
            return older
        self._came(client)
        self.changed()
        return None

    def _came(self, client: str) -> None:
        timer = self._timers.pop(client, None)
        if timer is not None:
            timer.cancel()  # back within the grace
        elif self.hooks and client not in self.joined:
            self.joined.add(client)
            self.enqueue(client, "join")
            self.changed()

    def depart(self, sub: Subscriber) -> None:
        """A connection that :meth:`arrive` counted has ended."""
        if sub.role != "agent" or sub.client is None:
            self.spectators -= 1
            self.changed()
            return
        if self.connected.get(sub.client) is not sub:
            return  # taken over: the newer connection is the agent now
        del self.connected[sub.client]
        self._went(sub.client)
        self.changed()

    def _went(self, client: str) -> None:
        if client in self.joined and not self._here(client):
            self._start_grace(client)

    # --- agents on other nodes ----------------------------------------------------------

    def arrive_elsewhere(self, client: str, node: str, number: int, now: float) -> None:
        """``client`` connected on ``node`` with HELLO ``number`` (or is still there)."""
        known = self.elsewhere.get(client)
        if known is not None and known[1] > number:
            return  # an older connection's news: a newer one took over
        self.elsewhere[client] = (node, number, now)
        if known is None and client not in self.connected:
            self._came(client)

    def depart_elsewhere(self, client: str, node: str, number: int) -> None:
        """``client``'s connection ``number`` on ``node`` ended."""
        known = self.elsewhere.get(client)
        if known is None or known[:2] != (node, number):
            return  # taken over meanwhile: the newer connection is the agent now
        del self.elsewhere[client]
        self._went(client)

    def roster(self, node: str, agents: dict[str, int], now: float) -> None:
        """Every agent connected on ``node`` now: the ones not listed have departed."""
        for client, (where, number, _) in list(self.elsewhere.items()):
            if where == node and agents.get(client) != number:
                self.depart_elsewhere(client, where, number)
        for client, number in agents.items():
            self.arrive_elsewhere(client, node, number, now)

    def heard_all(self, now: float) -> None:
        """Count every agent elsewhere as heard now (after news may have been lost)."""
        self.elsewhere = {c: (node, n, now) for c, (node, n, _) in self.elsewhere.items()}

    def expire(self, before: float) -> None:
        """Agents of nodes not heard from since ``before`` (they died): departed."""
        for client, (node, number, heard) in list(self.elsewhere.items()):
            if heard < before:
                self.depart_elsewhere(client, node, number)

    # --- ownership moving (cluster) -------------------------------------------------------

    def run_hooks(self, hooks: bool, present: Iterable[str]) -> None:
        """This node now owns the room: agents the state lists as present get the grace to
        reconnect (as after a restart); agents connected anywhere but not listed join."""
        self.hooks = hooks
        self.seed(present)
        if not self.hooks:
            return
        for client in sorted(self.connected.keys() | self.elsewhere.keys()):
            self._came(client)
        self.changed()

    def stop_hooks(self) -> None:
        """Another node owns the room now: its presence runs the hooks."""
        self.close()
        self.joined.clear()
        self.hooks = False
        self.changed()

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
        if self._here(client) or client not in self.joined:
            return
        self.joined.discard(client)
        self.enqueue(client, "leave")
        self.changed()

    def close(self) -> None:
        """Cancel pending leaves (the room is unloading: they run after the next load)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

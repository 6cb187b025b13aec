"""Who is connected to a room right now, kept as counts so a listing reads it in O(agents)."""

from __future__ import annotations


class Roster:
    """Connected agents by client id (with their connection count) and a spectator count."""

    __slots__ = ("_agents", "spectators")

    def __init__(self) -> None:
        self._agents: dict[str, int] = {}
        self.spectators = 0

    def add(self, role: str, client: str | None) -> None:
        if role == "agent" and client is not None:
            self._agents[client] = self._agents.get(client, 0) + 1
        else:
            self.spectators += 1

    def remove(self, role: str, client: str | None) -> None:
        if role == "agent" and client is not None:
            left = self._agents.get(client, 0) - 1
            if left > 0:
                self._agents[client] = left
            else:
                self._agents.pop(client, None)
        else:
            self.spectators = max(0, self.spectators - 1)

    @property
    def agents(self) -> list[str]:
        return sorted(self._agents)

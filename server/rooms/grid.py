"""An example room with real rules: agents walking on a bounded grid.

State::

    {"size": [w, h], "agents": {client: {"x": int, "y": int}}}

Actions (from agents only):

* ``join`` ``{"x": int, "y": int}`` (or nil for the first free cell): place the
  acting agent; ``conflict`` if the cell is taken or the agent is already placed.
* ``move`` ``"n"|"s"|"e"|"w"``: one cell; ``invalid`` off the board or for a
  bad direction, ``conflict`` into an occupied cell.
* ``leave``: remove the acting agent.

Presence: when an agent leaves the room (its connection ends and it does not
reconnect within ``--leave-grace``), its piece is removed and its cell freed
for others, as if it had sent ``leave``. An agent that comes back later joins
again. A reconnect within the grace keeps the piece where it was.

Register it with ``--room-type 'grid-*=statecast.server.rooms.grid:GridRoom'``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from statecast.protocol.errors import Rejection
from statecast.server.room import ActionContext, Room, action

STEPS: dict[str, tuple[int, int]] = {"n": (0, -1), "s": (0, 1), "e": (1, 0), "w": (-1, 0)}


class GridRoom(Room):
    width: ClassVar[int] = 16
    height: ClassVar[int] = 16

    def initial_state(self) -> dict[str, Any]:
        return {"size": [self.width, self.height], "agents": {}}

    def _occupied(self, x: int, y: int) -> bool:
        return any(a["x"] == x and a["y"] == y for a in self.state["agents"].values())

    def _check_cell(self, x: Any, y: Any) -> None:
        """Raise unless (x, y) is a free cell on the board."""
        if type(x) is not int or type(y) is not int:
            raise Rejection("invalid", "x and y must be ints")
        if not (0 <= x < self.width and 0 <= y < self.height):
            raise Rejection("invalid", f"({x}, {y}) is off the board")
        if self._occupied(x, y):
            raise Rejection("conflict", f"({x}, {y}) is occupied")

    @action("join")
    def join(self, ctx: ActionContext, args: Any) -> None:
        if ctx.client in self.state["agents"]:
            raise Rejection("conflict", "already on the board")
        if args is None:
            free = (
                (x, y)
                for y in range(self.height)
                for x in range(self.width)
                if not self._occupied(x, y)
            )
            cell = next(free, None)
            if cell is None:
                raise Rejection("conflict", "the board is full")
            target: tuple[Any, Any] = cell
        elif type(args) is dict:
            target = (args.get("x"), args.get("y"))
        else:
            raise Rejection("invalid", "join takes {x, y} or nil")
        self._check_cell(*target)
        ctx.set(["agents", ctx.client], {"x": target[0], "y": target[1]})

    @action("move")
    def move(self, ctx: ActionContext, args: Any) -> None:
        me = self.state["agents"].get(ctx.client)
        if me is None:
            raise Rejection("invalid", "join before moving")
        step = STEPS.get(args) if type(args) is str else None
        if step is None:
            raise Rejection("invalid", "move takes 'n', 's', 'e' or 'w'")
        x, y = me["x"] + step[0], me["y"] + step[1]
        self._check_cell(x, y)
        ctx.set(["agents", ctx.client, "x"], x)
        ctx.set(["agents", ctx.client, "y"], y)

    @action("leave")
    def leave(self, ctx: ActionContext, args: Any) -> None:
        if ctx.client not in self.state["agents"]:
            raise Rejection("invalid", "not on the board")
        ctx.delete(["agents", ctx.client])

    def on_leave(self, ctx: ActionContext) -> None:
        if ctx.client in self.state["agents"]:
            ctx.delete(["agents", ctx.client])

    def present_agents(self) -> Iterable[str]:
        return list(self.state["agents"])

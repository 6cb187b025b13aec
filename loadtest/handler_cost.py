"""``python -m statecast.loadtest.handler_cost``: what running a handler costs the room.

Times ``Room.run_action`` (best of five rounds) for three handlers that read the state
differently: one that reads a key, the grid room's ``move`` (reads every agent's map),
and a task board's ``release`` (scans 200 tasks). What changes from one release to the
next is the work around the handler: the read-only view it reads through, and the
bookkeeping of answers and catch-up. Run it against two trees in one sitting and compare
the ratios; the machine's noise is larger than its absolute figures' precision.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from statecast.protocol.errors import Rejection
from statecast.server.room import ActionContext, Room, action
from statecast.server.rooms.grid import GridRoom


class Counter(Room):
    @action()
    def add(self, ctx: ActionContext, args: Any) -> None:
        ctx.set(["n"], ctx.state.get("n", 0) + args)


class Board(Room):
    def initial_state(self) -> dict[str, Any]:
        return {"tasks": {f"t{i}": {"owner": None, "title": "x"} for i in range(200)}}

    @action()
    def claim(self, ctx: ActionContext, args: Any) -> None:
        for task, fields in ctx.state["tasks"].items():
            if fields["owner"] is None:
                ctx.set(["tasks", task, "owner"], ctx.client)
                return
        raise Rejection("conflict", "none left")

    @action()
    def release(self, ctx: ActionContext, args: Any) -> None:
        for task, fields in ctx.state["tasks"].items():
            if fields["owner"] == ctx.client:
                ctx.set(["tasks", task, "owner"], None)


def per_action(room: Room, step: Callable[[int], tuple[str, Any]], n: int) -> float:
    """Microseconds per action, best of five rounds of ``n``."""
    room.set_limits(max_depth=64, max_key_length=None, max_state_bytes=None)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for i in range(n):
            name, args = step(i)
            room.run_action("c", name, args)
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def main() -> None:
    grid = GridRoom("g")
    grid.set_limits(max_depth=64, max_key_length=None, max_state_bytes=None)
    for k in range(30):
        grid.run_action(f"a{k}", "join", None)
    grid.run_action("c", "join", {"x": 15, "y": 15})
    rows = [
        ("a counter's add (reads one key)", per_action(Counter("c"), lambda i: ("add", 1), 20_000)),
        (
            "the grid room's move, 31 agents",
            per_action(grid, lambda i: ("move", "ns"[i % 2]), 5_000),
        ),
        (
            "a board's claim then release, 200 tasks",
            per_action(Board("b"), lambda i: (("claim", "release")[i % 2], None), 2_000),
        ),
    ]
    for label, us in rows:
        print(f"{label:45} {us:7.2f} µs/action")


if __name__ == "__main__":
    main()

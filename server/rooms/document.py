"""The built-in document room (docs/protocol.md §9.1)."""

from __future__ import annotations

from typing import Any

from statecast.protocol import ops
from statecast.server.room import ActionContext, Room, action


class DocumentRoom(Room):
    """A free-form document: ``patch`` applies a list of ops, all or nothing."""

    @action("patch")
    def patch(self, ctx: ActionContext, args: Any) -> None:
        for op in ops.parse_ops(args, self.max_depth):
            ctx.record(op)

"""The built-in document room (docs/protocol.md §9.1)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from statecast.protocol import ops
from statecast.protocol.errors import Rejection
from statecast.server.room import ActionContext, Room, action

#: The key under which a document room with presence records its agents:
#: ``{"presence": {client: true, ...}}``.
PRESENCE_KEY: Final = "presence"


def record_patch(ctx: ActionContext, patch: list[ops.Op]) -> None:
    """An applied patch is one DIFF with exactly its ops (docs/protocol.md §9.1), so a
    set to the value already there stays in it; a patch that changes nothing at all
    makes no DIFF and is ACKed with the head, as an empty patch is."""
    for op in patch:
        ctx.record(op, exact=True)
    if not ctx.changed:
        ctx.rollback()


class DocumentRoom(Room):
    """A free-form document: ``patch`` applies a list of ops, all or nothing."""

    @action("patch")
    def patch(self, ctx: ActionContext, args: Any) -> None:
        record_patch(ctx, ops.parse_ops(args, self.max_depth))


class PresenceDocumentRoom(DocumentRoom):
    """The document room with ``--document-presence``: present agents under ``"presence"``.

    The server owns that key: a patch that touches it is refused with
    ``forbidden``, so what it says can be trusted.
    """

    @action("patch")
    def patch(self, ctx: ActionContext, args: Any) -> None:
        parsed = ops.parse_ops(args, self.max_depth)
        if any(op[1][0] == PRESENCE_KEY for op in parsed):
            raise Rejection("forbidden", f"{PRESENCE_KEY!r} is kept by the server")
        record_patch(ctx, parsed)

    def on_join(self, ctx: ActionContext) -> None:
        if not isinstance(self.state.get(PRESENCE_KEY), Mapping):  # a view, in a hook
            ctx.set([PRESENCE_KEY], {ctx.client: True})
        else:
            ctx.set([PRESENCE_KEY, ctx.client], True)

    def on_leave(self, ctx: ActionContext) -> None:
        present = self.state.get(PRESENCE_KEY)
        if isinstance(present, Mapping) and ctx.client in present:
            ctx.delete([PRESENCE_KEY, ctx.client])

    def present_agents(self) -> Iterable[str]:
        present = self.state.get(PRESENCE_KEY)
        return list(present) if isinstance(present, Mapping) else ()

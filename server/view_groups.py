"""View groups: subscribers that see the same part of a room share one frame per batch.

Subscribers whose effective view (protocol/views.py) is the same spec form one group,
as Electric SQL's identical shapes share one log: each batch's net change is cut to the
group's view once, encoded once as a VIEW_DIFF and framed once, and each member gets the
same bytes by one write (docs/protocol.md §5.12). A room with a thousand spectators on
ten views pays ten cuts and ten encodings per batch, not a thousand.

``last`` is the seq of the group's last VIEW_DIFF, or the head when the group formed:
every member's copy is at a seq at or after it, which is what lets each VIEW_DIFF name
the seq it follows (``since``) for all members at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from statecast.protocol import codec
from statecast.protocol.views import Spec, spec_key, view_of
from statecast.server.fanout import Subscriber


class ViewGroup:
    __slots__ = ("direct", "framed", "key", "last", "members", "snapshot", "spec")

    def __init__(self, spec: Spec, head: int) -> None:
        self.spec: Spec = spec
        self.key: Any = spec_key(spec)
        self.last = head
        self.members: dict[Subscriber, None] = {}
        #: Members its frame goes to by one bare write each, and those with an extension
        #: negotiated, as the feed keeps them for the whole room (server/feed.py).
        self.direct: dict[Subscriber, Callable[[bytes], object]] = {}
        self.framed: dict[Subscriber, None] = {}
        #: (epoch, head, encoded SNAPSHOT of the view): cached until the next change.
        self.snapshot: tuple[str, int, bytes] | None = None

    def snapshot_bytes(self, epoch: str, head: int, state: dict[str, Any]) -> bytes:
        """The encoded SNAPSHOT of the view at ``head`` (one encoding for every member)."""
        cached = self.snapshot
        if cached is None or cached[0] != epoch or cached[1] != head:
            cached = self.snapshot = (
                epoch,
                head,
                codec.encode_snapshot(epoch, head, view_of(state, self.spec)),
            )
        return cached[2]

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
from statecast.protocol.views import ALL, Partial, Spec, spec_key, view_of
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


def anchors(spec: Spec) -> list[list[str]] | None:
    """The paths at which ``spec`` starts to show something (an ALL point, or a map whose
    other keys show), or None when its root is open (a room with private parts, seen from
    anywhere but inside an area): a batch reaches the view only through an op whose path
    is a prefix of one of them or goes on from one."""
    if not isinstance(spec, Partial) or spec.other is not None:
        return None
    out: list[list[str]] = []
    stack: list[tuple[Spec, list[str]]] = [(spec, [])]
    while stack:
        node, path = stack.pop()
        if node is ALL or (isinstance(node, Partial) and node.other is not None):
            out.append(path)
        elif isinstance(node, Partial):
            stack.extend((child, [*path, key]) for key, child in node.children.items())
    return out


class Dispatch:
    """Which view groups a batch can reach, by the paths of its ops: a trie of the groups'
    anchors, so that a room with a thousand views on different parts cuts a batch for the
    few it reaches rather than for all (groups with an open root are always cut)."""

    __slots__ = ("_always", "_root")

    def __init__(self, groups: list[ViewGroup]) -> None:
        self._root: dict[Any, Any] = {}
        self._always: list[ViewGroup] = []
        for group in groups:
            points = anchors(group.spec)
            if points is None:
                self._always.append(group)
                continue
            for path in points:
                node = self._root
                for key in path:
                    node = node.setdefault(key, {})
                node.setdefault(_HERE, []).append(group)

    def reached(self, op_paths: list[list[Any]]) -> list[ViewGroup]:
        """The groups whose view an op at one of ``op_paths`` may touch, each once."""
        found: dict[ViewGroup, None] = dict.fromkeys(self._always)
        for path in op_paths:
            node = self._root
            for key in path:
                found.update(dict.fromkeys(node.get(_HERE, ())))
                nxt = node.get(key) if type(key) is str else None
                if nxt is None:
                    break
                node = nxt
            else:  # the op is at or above these anchors: every group under it
                stack = [node]
                while stack:
                    here = stack.pop()
                    for key, value in here.items():
                        if key is _HERE:
                            found.update(dict.fromkeys(value))
                        else:
                            stack.append(value)
        return list(found)


_HERE: Any = object()

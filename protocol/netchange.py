"""Net-change catch-up: what changed between a client's seq and the head, not every diff.

A client back after a long absence needs the *net* change: the entries that differ
between its state and the head, each set to its value now or removed. That is
bounded by what changed, however many diffs changed it, where a replay grows with
the diffs and a SNAPSHOT with the state (docs/protocol.md §5.11).

:class:`ChangeIndex` remembers, for every *entry* a diff touched since its
``horizon``, the seq of the entry's last change. An entry is the part of the state an
op can change without touching anything outside it, read from the op's path alone (a
str segment indexes a map, an int one a list, so no state is needed):

* a map key's value, at the op's own path: ``set`` and ``del`` of ``["tasks", "t1",
  "owner"]`` touch that entry only;
* a whole list, for an op at or under a list (an ``ins`` shifts every later index,
  so an index names nothing stable): ``ins`` at ``["log", -1]`` touches ``["log"]``.

A ``set`` may also create the maps on its way: each map above its entry is marked as
*made* at that seq. An entry changed after its descendants covers them (they are
dropped), and a deleted entry stays as a tombstone with the seq of its removal.

The net change since ``seq`` (:meth:`ChangeIndex.net_change`) is then, for each
outermost entry changed after ``seq``, ``set`` to its value at the head or ``del`` if
it has none; and for each map made after ``seq`` that is empty at the head, ``set`` to
``{}`` (its parts came and went, but it stayed). Applied with :func:`apply_net_change`
(a ``del`` of what is not there is nothing: the entry may have come and gone since
``seq``) to the state at ``seq``, it gives the state at the head. Computing it visits
only the index nodes changed after ``seq``: its cost grows with what changed, not with
the state or the number of diffs.
"""

from __future__ import annotations

from typing import Any, Final

from statecast.protocol.ops import DEL, SET, Op, Path, Undo, apply_op, invalid, rollback

_MISSING: Final = object()


def entry_path(path: Path, depth: int = 0) -> Path:
    """The entry an op at ``path`` changes: the path up to its first list index, and at
    most ``depth`` keys long when ``depth`` is set (a room type's coarser entries)."""
    for i, seg in enumerate(path):
        if type(seg) is int or i == depth > 0:
            return path[:i]
    return path


class _Node:
    __slots__ = ("children", "latest", "made", "seq")

    def __init__(self) -> None:
        #: The seq of this entry's last change as a whole (0: only its parts changed).
        self.seq = 0
        #: The last seq at which a set may have created this map on its way (0: none).
        self.made = 0
        #: The newest seq anywhere at or under this node.
        self.latest = 0
        self.children: dict[Any, _Node] | None = None


class ChangeIndex:
    """The seq of each entry's last change since ``horizon`` (see the module doc)."""

    def __init__(self, horizon: int, keep: int = 0, depth: int = 0) -> None:
        #: Net changes are known from this seq on; an older cursor needs a SNAPSHOT.
        self.horizon = horizon
        #: Seqs the index covers at least (``--tombstone-horizon``; 0: all since the start):
        #: past twice that, what is older is forgotten, so trimming costs O(1) per diff.
        self.keep = keep
        #: Entries are at most this many keys deep (0: down to each op's own path).
        self.depth = depth
        self._root = _Node()
        #: Nodes held (for memory figures).
        self.nodes = 0

    def record_ops(self, seq: int, ops: list[Any]) -> None:
        """The diff numbered ``seq`` applied ``ops`` (wire form: ``[kind, path, ...]``)."""
        for op in ops:
            self.record(seq, op[0], op[1])

    def record(self, seq: int, kind: int, path: Path) -> None:
        """An op of kind ``kind`` at ``path`` in the diff numbered ``seq``."""
        entry = entry_path(path, self.depth)
        makes = kind == SET and len(entry) == len(path)  # may create the maps above it
        node = self._root
        node.latest = seq
        for seg in entry:
            children = node.children
            if children is None:
                children = node.children = {}
            child = children.get(seg)
            if child is None:
                child = children[seg] = _Node()
                self.nodes += 1
            if makes and node is not self._root:
                node.made = seq
            child.latest = seq
            node = child
        if node.children:  # the entry changed as a whole: its parts' changes are in it
            self.nodes -= _count(node)
            node.children = None
        node.seq = seq
        if self.keep and seq - self.horizon > 2 * self.keep:
            self.trim(seq - self.keep)

    def net_change(self, state: dict[str, Any], since: int) -> list[Op] | None:
        """Ops taking the state at ``since`` to ``state`` (the head); None if ``since`` is
        before the horizon."""
        if since < self.horizon:
            return None
        out: list[Op] = []
        stack: list[tuple[_Node, Path, Any]] = [(self._root, [], state)]
        while stack:
            node, path, value = stack.pop()
            if not node.children:
                continue
            for key, child in node.children.items():
                if child.latest <= since:
                    continue
                child_path = [*path, key]
                here = value.get(key, _MISSING) if type(value) is dict else _MISSING
                if child.seq > since:
                    out.append([DEL, child_path] if here is _MISSING else [SET, child_path, here])
                elif child.made > since and type(here) is dict and not here:
                    out.append([SET, child_path, {}])
                else:
                    stack.append((child, child_path, here))
        return out

    def trim(self, horizon: int) -> None:
        """Forget what changed at or before ``horizon`` (it becomes the new horizon)."""
        if horizon <= self.horizon:
            return
        self.horizon = horizon
        self.nodes -= _prune(self._root, horizon)


def _count(node: _Node) -> int:
    """Nodes under ``node`` (not counting it)."""
    total = 0
    stack = [node]
    while stack:
        n = stack.pop()
        if n.children:
            total += len(n.children)
            stack.extend(n.children.values())
    return total


def _prune(node: _Node, horizon: int) -> int:
    """Drop the subtrees under ``node`` changed at or before ``horizon``; nodes dropped."""
    if not node.children:
        return 0
    dropped = 0
    for key in [k for k, c in node.children.items() if c.latest <= horizon]:
        dropped += 1 + _count(node.children.pop(key))
    for child in node.children.values():
        dropped += _prune(child, horizon)
    return dropped


def apply_net_change(state: dict[str, Any], net: list[Op]) -> None:
    """Apply a net change (parsed ops) all or nothing: ``set`` as ever (maps created on
    the way), ``del`` of a path that is not there changes nothing."""
    undo: list[Undo] = []
    try:
        for op in net:
            if op[0] == DEL and not path_exists(state, op[1]):
                continue
            if op[0] not in (SET, DEL):
                raise invalid("a net change holds only set and del")
            apply_op(state, op, undo)
    except BaseException:
        rollback(undo)
        raise


def path_exists(state: dict[str, Any], path: Path) -> bool:
    node: Any = state
    for seg in path:
        if type(node) is dict and type(seg) is str:
            node = node.get(seg, _MISSING)
        elif type(node) is list and type(seg) is int and 0 <= seg < len(node):
            node = node[seg]
        else:
            return False
        if node is _MISSING:
            return False
    return True

"""State values and ops: the item-level deltas every diff is made of.

A room's state is a JSON-compatible document (docs/protocol.md §2.2): nil, bool,
int in ±(2^53 - 1), finite float, str, list, and maps with str keys. Those are
the values that every language decodes exactly the same way, which is what lets
a client in any language apply the same ops and arrive at the same state bit
for bit.

An op is one of::

    [0, path, value]   set: create or replace a map key or list item
    [1, path]          del: remove a map key or list item
    [2, path, value]   ins: insert into a list before path[-1] (-1 or len appends)

This module parses ops from their wire form, checks values, and applies ops to
a state with an undo log, so that a list of ops applies all or nothing in time
proportional to the change (never by copying the state). The server, the Python
client and the tests all use these same functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Final, TypeAlias

from statecast.protocol.errors import Rejection

SET: Final = 0
DEL: Final = 1
INS: Final = 2

MAX_SAFE_INT: Final = 2**53 - 1
DEFAULT_MAX_DEPTH: Final = 64

Value: TypeAlias = Any
"""A state-compatible value (see :func:`check_value`)."""

PathSegment: TypeAlias = str | int
Path: TypeAlias = list[PathSegment]
Op: TypeAlias = list[Any]
"""An op in wire form: ``[0, path, value]``, ``[1, path]`` or ``[2, path, value]``."""

Undo: TypeAlias = Callable[[], None]

_MISSING: Final = object()


def invalid(message: str) -> Rejection:
    return Rejection("invalid", message)


def too_large(message: str) -> Rejection:
    return Rejection("too_large", message)


def clone_value(value: Any, depth_left: int = DEFAULT_MAX_DEPTH) -> Value:
    """Check that ``value`` is state-compatible and return a private deep copy.

    The copy matters: a value placed in the state must not share lists or maps
    with the op that carried it (or with a room handler's local variables), or a
    later in-place change to the state would also change an op already sent.
    ``depth_left`` counts the container levels still allowed below this point.
    """
    t = type(value)
    if t is str or value is None or t is bool:
        return value
    if t is int:
        if -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            return value
        raise invalid("integer outside ±(2^53 - 1)")
    if t is float:
        if math.isfinite(value):
            return value
        raise invalid("float is not finite")
    if t is dict:
        if depth_left <= 0:
            raise too_large("value nested too deeply")
        out: dict[str, Value] = {}
        for k, v in value.items():
            if type(k) is not str:
                raise invalid("map keys must be strings")
            out[k] = clone_value(v, depth_left - 1)
        return out
    if t is list or t is tuple:
        if depth_left <= 0:
            raise too_large("value nested too deeply")
        return [clone_value(v, depth_left - 1) for v in value]
    inner = getattr(value, "__statecast_value__", _MISSING)
    if inner is not _MISSING:  # a read-only view of a room's state (server/state_view.py)
        return clone_value(inner, depth_left)
    raise invalid(f"{t.__name__} is not a state value")


def check_value(value: Any, depth_left: int = DEFAULT_MAX_DEPTH) -> None:
    """Raise :class:`Rejection` unless ``value`` is state-compatible."""
    clone_value(value, depth_left)


def is_state_value(value: Any, depth_left: int = DEFAULT_MAX_DEPTH) -> bool:
    try:
        clone_value(value, depth_left)
    except Rejection:
        return False
    return True


def check_path(path: Any, max_depth: int = DEFAULT_MAX_DEPTH) -> Path:
    if type(path) is not list and type(path) is not tuple:
        raise invalid("a path must be a list")
    if not path:
        raise invalid("a path must not be empty")
    if len(path) > max_depth:
        raise too_large("path nested too deeply")
    for seg in path:
        ts = type(seg)
        if ts is not str and ts is not int:
            raise invalid("path segments must be str or int")
    return list(path)


def parse_op(raw: Any, max_depth: int = DEFAULT_MAX_DEPTH) -> Op:
    """Validate one op in wire form and return it with a private copy of its value."""
    if type(raw) is not list and type(raw) is not tuple:
        raise invalid("an op must be a list")
    if not raw or type(raw[0]) is not int:
        raise invalid("an op must start with its int kind")
    kind = raw[0]
    if kind == DEL:
        if len(raw) != 2:
            raise invalid("del takes [1, path]")
        return [DEL, check_path(raw[1], max_depth)]
    if kind in (SET, INS):
        if len(raw) != 3:
            raise invalid("set and ins take [kind, path, value]")
        path = check_path(raw[1], max_depth)
        return [kind, path, clone_value(raw[2], max_depth - len(path))]
    raise invalid(f"unknown op kind {kind!r}")


def parse_ops(raw: Any, max_depth: int = DEFAULT_MAX_DEPTH) -> list[Op]:
    if type(raw) is not list and type(raw) is not tuple:
        raise invalid("ops must be a list")
    return [parse_op(op, max_depth) for op in raw]


def _walk(state: dict[str, Value], path: Path, create: bool, undo: list[Undo]) -> Any:
    """Return the container that ``path[-1]`` addresses, creating maps if asked."""
    node: Any = state
    for seg in path[:-1]:
        if type(node) is dict:
            if type(seg) is not str:
                raise invalid("an int segment cannot index a map")
            child = node.get(seg, _MISSING)
            if child is _MISSING:
                if not create:
                    raise invalid(f"no key {seg!r} on the path")
                child = {}
                node[seg] = child
                undo.append(_undo_pop_key(node, seg))
            node = child
        elif type(node) is list:
            if type(seg) is not int:
                raise invalid("a str segment cannot index a list")
            if not 0 <= seg < len(node):
                raise invalid("list index out of range")
            node = node[seg]
        else:
            raise invalid("the path goes through a value that is not a container")
    return node


def _undo_pop_key(node: dict[str, Value], key: str) -> Undo:
    return lambda: node.pop(key)


def _undo_restore_key(node: dict[str, Value], key: str, old: Value) -> Undo:
    def restore() -> None:
        node[key] = old

    return restore


def _undo_restore_item(node: list[Value], index: int, old: Value) -> Undo:
    def restore() -> None:
        node[index] = old

    return restore


def _undo_reinsert(node: list[Value], index: int, old: Value) -> Undo:
    return lambda: node.insert(index, old)


def _undo_remove_at(node: list[Value], index: int) -> Undo:
    return lambda: node.pop(index) and None


def apply_op(state: dict[str, Value], op: Op, undo: list[Undo]) -> None:
    """Apply one parsed op to ``state`` in place, appending how to revert it to ``undo``.

    On :class:`Rejection` the state may be partly changed; the caller reverts
    with :func:`rollback`. ``op``'s value is placed in the state as it is: pass
    ops from :func:`parse_op` (or values from :func:`clone_value`).
    """
    kind = op[0]
    path = op[1]
    last = path[-1]
    node = _walk(state, path, kind == SET, undo)
    if kind == SET:
        if type(node) is dict:
            if type(last) is not str:
                raise invalid("an int segment cannot index a map")
            old = node.get(last, _MISSING)
            node[last] = op[2]
            undo.append(
                _undo_pop_key(node, last) if old is _MISSING else _undo_restore_key(node, last, old)
            )
        elif type(node) is list:
            if type(last) is not int or not 0 <= last < len(node):
                raise invalid("set: list index out of range")
            old = node[last]
            node[last] = op[2]
            undo.append(_undo_restore_item(node, last, old))
        else:
            raise invalid("set: the parent is not a container")
    elif kind == DEL:
        if type(node) is dict:
            if type(last) is not str:
                raise invalid("an int segment cannot index a map")
            if last not in node:
                raise invalid(f"del: no key {last!r}")
            undo.append(_undo_restore_key(node, last, node.pop(last)))
        elif type(node) is list:
            if type(last) is not int or not 0 <= last < len(node):
                raise invalid("del: list index out of range")
            undo.append(_undo_reinsert(node, last, node.pop(last)))
        else:
            raise invalid("del: the parent is not a container")
    elif kind == INS:
        if type(node) is not list:
            raise invalid("ins: the parent is not a list")
        if type(last) is not int:
            raise invalid("ins: the index must be an int")
        size = len(node)
        index = size if last == -1 else last
        if not 0 <= index <= size:
            raise invalid("ins: list index out of range")
        node.insert(index, op[2])
        undo.append(_undo_remove_at(node, index))
    else:  # parse_op admits no other kind
        raise invalid(f"unknown op kind {kind!r}")


def rollback(undo: list[Undo]) -> None:
    """Revert the changes recorded in ``undo``, newest first, and empty it."""
    while undo:
        undo.pop()()


def apply_ops(state: dict[str, Value], ops: Iterable[Op]) -> None:
    """Apply parsed ops all or nothing: on :class:`Rejection` the state is as before."""
    undo: list[Undo] = []
    try:
        for op in ops:
            apply_op(state, op, undo)
    except BaseException:
        rollback(undo)
        raise


def apply_wire_ops(state: dict[str, Value], raw: Any, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
    """Parse and apply ops as received (a DIFF's or a changefeed's), all or nothing."""
    apply_ops(state, parse_ops(raw, max_depth))

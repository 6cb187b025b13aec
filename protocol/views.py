"""Views: the part of a room's state a subscriber sees (docs/protocol.md §5.12).

A view is asked for as a list of path prefixes (``[["board"], ["players", "p7"]]``);
what a subscriber may see is also bounded by its token's ``view`` claim and by the room
type's private parts (``["hands", "{client}"]``: each agent sees only its own hand).
All three become one :data:`Spec`, a tree over map keys:

* :data:`ALL`: everything at and under this point is visible;
* ``None``: nothing here is visible;
* :class:`Partial`: a map whose listed keys have their own spec and whose other keys
  have ``other``'s.

**What a view holds** (:func:`visible`): the state cut to the spec, where a map at a
partial point is kept only if something in it is visible, and a value that is not a map
is kept at a partial point only if the point is *open* (its ``other`` is :data:`ALL`).
So the view of ``{"players": {"p8": 1}}`` for ``[["players", "p7"]]`` is ``{}``: no empty
``players`` map betrays that the path exists. (A map that is empty, or holds only what
is hidden, shows nowhere but at or under a prefix: a ``set`` out of sight may create
maps on its way, and their coming would otherwise have to be sent.)

**How a view follows the room** (:func:`cut_batch`): each batch of diffs is cut once
per view. An op at or under a visible prefix goes as it is, in order (an ``ins`` into a
long list stays one op); an op outside the view goes nowhere; an op above a prefix (a
``set`` of ``["players"]`` as a whole) is replaced, after the ops that go as they are, by
that path's value at the batch's end cut to the view, and the ops under it are dropped
(that value holds their effect); last, a prefix's value removed, or a path above left with
nothing visible, removes the highest map left with nothing visible. Applied in order with
one change to the ops' rules (a ``del`` of what is not there is nothing) to the view at
the batch's start, the ops give the view at its end. A resume's catch-up
(:func:`restrict`) cuts the *net change* since the client's seq the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any, Final, TypeAlias

from statecast.protocol.netchange import path_exists
from statecast.protocol.ops import DEL, SET, Op, Path, Undo, apply_op, rollback

#: The longest view a client may ask for: prefixes, and segments per prefix.
MAX_PREFIXES: Final = 64
MAX_PREFIX_DEPTH: Final = 32
#: The segment of a private prefix that stands for the agent's client id.
CLIENT_SEGMENT: Final = "{client}"


class _All:
    __slots__ = ()

    def __repr__(self) -> str:
        return "ALL"


ALL: Final = _All()

Spec: TypeAlias = "_All | Partial | None"


class Partial:
    """A map whose keys in ``children`` have their own spec and the others ``other``'s."""

    __slots__ = ("children", "key", "other")

    def __init__(self, other: Spec, children: dict[str, Spec]) -> None:
        self.other: Spec = other
        # A child equal to ``other`` says nothing: dropped, so equal specs compare equal.
        self.children: dict[str, Spec] = {
            k: c for k, c in children.items() if spec_key(c) != spec_key(other)
        }
        self.key: tuple[Any, ...] = (
            spec_key(other),
            tuple(sorted((k, spec_key(c)) for k, c in self.children.items())),
        )

    def child(self, key: Any) -> Spec:
        if type(key) is str:
            found = self.children.get(key, _MISSING)
            if found is not _MISSING:
                return found  # type: ignore[return-value]
        return self.other

    @property
    def open(self) -> bool:
        """Keys it does not name are wholly visible (a value that is not a map shows)."""
        return self.other is ALL

    def __repr__(self) -> str:
        return f"Partial({self.other!r}, {self.children!r})"


_MISSING: Final = object()


def spec_key(spec: Spec) -> Any:
    """A hashable form of ``spec``: equal specs have equal keys (members share a frame)."""
    if spec is None:
        return 0
    if spec is ALL:
        return 1
    assert isinstance(spec, Partial)
    return spec.key


def spec_tag(spec: Spec) -> str:
    """A short name of ``spec`` that is the same in every process (WELCOME's and VIEW_SET's
    ``view_tag``, a view's ETag): a resume from a copy of another view gets a SNAPSHOT."""
    return hashlib.blake2b(repr(spec_key(spec)).encode(), digest_size=6).hexdigest()


def _make(other: Spec, children: dict[str, Spec]) -> Spec:
    """A partial node, or the plain spec it amounts to."""
    node = Partial(other, children)
    if not node.children and (other is ALL or other is None):
        return other
    return node


def union(a: Spec, b: Spec) -> Spec:
    """Visible wherever either is."""
    if a is None:
        return b
    if b is None:
        return a
    if a is ALL or b is ALL:
        return ALL
    assert isinstance(a, Partial) and isinstance(b, Partial)
    keys = a.children.keys() | b.children.keys()
    return _make(union(a.other, b.other), {k: union(a.child(k), b.child(k)) for k in keys})


def intersect(a: Spec, b: Spec) -> Spec:
    """Visible where both are."""
    if a is None or b is None:
        return None
    if a is ALL:
        return b
    if b is ALL:
        return a
    assert isinstance(a, Partial) and isinstance(b, Partial)
    keys = a.children.keys() | b.children.keys()
    return _make(intersect(a.other, b.other), {k: intersect(a.child(k), b.child(k)) for k in keys})


def covers(outer: Spec, inner: Spec) -> bool:
    """Everything ``inner`` shows, ``outer`` shows too."""
    return bool(spec_key(intersect(outer, inner)) == spec_key(inner))


def from_prefixes(prefixes: Iterable[Sequence[str]]) -> Spec:
    """The spec showing exactly what is at or under each prefix (``[]`` is the root)."""
    spec: Spec = None
    for prefix in prefixes:
        node: Spec = ALL
        for seg in reversed(prefix):
            node = Partial(None, {seg: node})
        spec = union(spec, node)
    return spec


def check_prefixes(value: Any, what: str = "a view") -> list[list[str]]:
    """A view as a client or a token gives it: a list of 1 to 64 prefixes, each a list of
    at most 32 str segments (``[]`` is the whole state). Raises ValueError naming the
    rule."""
    if type(value) is not list or not value:
        raise ValueError(
            f"{what} is a list of 1 to {MAX_PREFIXES} path prefixes, each a list of map keys "
            f'(e.g. [["board"], ["players", "p7"]]), or true for all the connection may see'
        )
    if len(value) > MAX_PREFIXES:
        raise ValueError(f"{what} is a list of 1 to {MAX_PREFIXES} path prefixes")
    out: list[list[str]] = []
    for prefix in value:
        if (
            type(prefix) is not list
            or len(prefix) > MAX_PREFIX_DEPTH
            or not all(type(seg) is str for seg in prefix)
        ):
            raise ValueError(
                f"each prefix of {what} is a list of at most {MAX_PREFIX_DEPTH} map keys "
                f'(str), e.g. ["players", "p7"]; got {prefix!r}'[:300]
            )
        out.append(list(prefix))
    return out


def private_mask(patterns: Iterable[Sequence[str]], client: str | None) -> Spec:
    """What the room type's private prefixes leave visible to ``client`` (None: to nobody
    in particular, a spectator). A pattern ends with ``"{client}"``: the keys at that
    point are each visible, whole, only to the agent of that client id. (A pattern that
    went on below it would show an entry's key while hiding part of its value, and so
    tell when a hidden part came or went.)"""
    spec: Spec = ALL
    for pattern in patterns:
        check_private(pattern)
        area = list(pattern[:-1])
        node: Spec = Partial(None, {client: ALL} if client is not None else {})
        for seg in reversed(area):
            node = Partial(ALL, {seg: node})
        spec = intersect(spec, node)
    return spec


def check_private(pattern: Sequence[str]) -> None:
    """Raise ValueError unless ``pattern`` is map keys ending with ``"{client}"`` (once)."""
    if (
        not pattern
        or not all(type(seg) is str for seg in pattern)
        or pattern[-1] != CLIENT_SEGMENT
        or list(pattern).count(CLIENT_SEGMENT) != 1
    ):
        raise ValueError(
            f"a private pattern is map keys ending with {CLIENT_SEGMENT!r}, e.g. "
            f'("hands", "{CLIENT_SEGMENT}"); got {tuple(pattern)!r}'
        )


def effective(
    asked: Sequence[Sequence[str]] | None,
    granted: Sequence[Sequence[str]] | None,
    private: Sequence[Sequence[str]],
    client: str | None,
) -> Spec:
    """What a subscriber sees: what it asked for (None: everything), within its token's
    grant (None: the whole room but other agents' private parts), and within the room
    type's private parts, of which a grant that names a path in a private area shows
    that much."""
    mask = private_mask(private, client)
    if granted is not None:
        areas = [list(p[: list(p).index(CLIENT_SEGMENT)]) for p in private]
        named = [g for g in granted if any(_starts_with(g, a) for a in areas)]
        if named:
            mask = union(mask, from_prefixes(named))
        mask = intersect(mask, from_prefixes(granted))
    if asked is None:
        return mask
    return intersect(mask, from_prefixes(asked))


def _starts_with(path: Sequence[Any], prefix: Sequence[Any]) -> bool:
    return len(path) >= len(prefix) and list(path[: len(prefix)]) == list(prefix)


# --- the view of a state ----------------------------------------------------------------


def visible(value: Any, spec: Spec) -> Any:
    """``value`` cut to ``spec`` (the module doc's rules); :data:`ABSENT` when nothing of
    it shows. The parts wholly visible are the state's own objects, not copies."""
    if spec is ALL:
        return value
    if spec is None:
        return ABSENT
    assert isinstance(spec, Partial)
    if type(value) is not dict:
        return value if spec.open else ABSENT
    out: dict[str, Any] = {}
    if spec.other is None:
        for key, child in spec.children.items():
            if key in value:
                cut = visible(value[key], child)
                if cut is not ABSENT:
                    out[key] = cut
    else:
        for key, item in value.items():
            cut = visible(item, spec.child(key))
            if cut is not ABSENT:
                out[key] = cut
    return out if out else ABSENT


ABSENT: Final = _MISSING


def view_of(state: dict[str, Any], spec: Spec) -> dict[str, Any]:
    """The view of a whole state (the root map always shows)."""
    cut = visible(state, spec)
    return {} if cut is ABSENT else cut


def _shows(value: Any, spec: Spec) -> bool:
    """Something of ``value`` shows under ``spec`` (visible() is not ABSENT), found
    without building the cut."""
    if value is _MISSING or spec is None:
        return False
    if spec is ALL:
        return True
    assert isinstance(spec, Partial)
    if type(value) is not dict:
        return spec.open
    if spec.other is None:
        return any(key in value and _shows(value[key], c) for key, c in spec.children.items())
    return any(_shows(item, spec.child(key)) for key, item in value.items())


def _at(state: Any, path: Path) -> Any:
    node = state
    for seg in path:
        if type(node) is not dict:
            return _MISSING
        node = node.get(seg, _MISSING)
        if node is _MISSING:
            return _MISSING
    return node


def restrict(net: Sequence[Op], state: dict[str, Any], spec: Spec) -> list[Op]:
    """The net change ``net`` (ops on entries, str paths: protocol/netchange.py) that
    took some state to ``state``, cut to ``spec``: applied with the net change's rules to
    the view of the first, it gives the view of ``state``."""
    if spec is ALL:
        return list(net)
    out: list[Op] = []
    for op in net:
        path = op[1]
        node, depth = _walk(spec, path)
        if node is None:
            continue  # outside the view
        if node is ALL and (op[0] == SET or depth < len(path)):
            out.append(op)  # at or under a visible prefix, which stays (module doc)
            continue
        # At a partial point (an entry above the view's prefixes), or the removal of a
        # visible prefix itself: its value cut to the view, or the highest map left
        # with nothing visible removed.
        value = _at(state, path)
        cut = visible(value, node) if value is not _MISSING else ABSENT
        if cut is not ABSENT:
            out.append([SET, path, cut])
            continue
        out.append([DEL, _highest_empty(state, path, spec)])
    return out


def _highest_empty(state: dict[str, Any], path: Path, spec: Spec) -> Path:
    """The shortest prefix of ``path`` under which nothing shows in ``state``."""
    node: Spec = spec
    value: Any = state
    for i, seg in enumerate(path):
        assert isinstance(node, Partial)
        node = node.child(seg)
        value = value.get(seg, _MISSING) if type(value) is dict else _MISSING
        if not _shows(value, node):
            return list(path[: i + 1])
    return list(path)


def _walk(spec: Spec, path: Path) -> tuple[Spec, int]:
    """The spec at ``path``, or where it became ALL or None, and how many segments that took."""
    node = spec
    depth = 0
    for seg in path:
        if node is ALL or node is None:
            break
        assert isinstance(node, Partial)
        node = node.child(seg)
        depth += 1
    return node, depth


def _outermost(paths: list[Path]) -> list[Path]:
    """``paths`` without duplicates and without those under another, first seen first."""
    out: list[Path] = []
    for path in paths:
        if any(list(path[: len(q)]) == q for q in out):
            continue
        out = [q for q in out if list(q[: len(path)]) != list(path)]
        out.append(list(path))
    return out


def cut_batch(ops: Sequence[Op], state: dict[str, Any], spec: Spec) -> list[Op]:
    """A batch's ops (wire form, in order) cut to ``spec``; ``state`` is the state after
    them. Applied with :func:`apply_view_ops` to the view before the batch, the result
    gives the view of ``state`` (the module doc says how)."""
    if spec is ALL:
        return list(ops)
    below: list[Op] = []
    above: list[Path] = []
    removed: list[Path] = []
    for op in ops:
        path = op[1]
        node, depth = _walk(spec, path)
        if node is None:
            continue
        if node is ALL:
            below.append(op)
            if op[0] == DEL and depth == len(path):
                removed.append(path)  # a prefix's value itself: maps above may empty
        else:
            above.append(path)
    if above:
        above = _outermost(above)
        below = [op for op in below if not any(_starts_with(op[1], a) for a in above)]
        removed = [p for p in removed if not any(_starts_with(p, a) for a in above)]
    out = below
    for path in above:
        node, _ = _walk(spec, path)
        value = _at(state, path)
        cut = visible(value, node) if value is not _MISSING else ABSENT
        if cut is ABSENT:
            removed.append(path)
        else:
            out.append([SET, path, cut])
    for path in _outermost(removed):
        if _at(state, path) is _MISSING or not _shows(_at(state, path), _walk(spec, path)[0]):
            out.append([DEL, _highest_empty(state, path, spec)])
    return out


def apply_view_ops(state: dict[str, Any], view_ops: list[Op]) -> None:
    """Apply a VIEW_DIFF's ops (parsed) all or nothing: as a DIFF's, but a ``del`` of a path
    that is not there changes nothing (docs/protocol.md §5.12)."""
    undo: list[Undo] = []
    try:
        for op in view_ops:
            if op[0] == DEL and not path_exists(state, op[1]):
                continue
            apply_op(state, op, undo)
    except BaseException:
        rollback(undo)
        raise


def change_view(state: dict[str, Any], old: Spec, new: Spec) -> list[Op]:
    """Ops (net-change rules) taking the view of ``state`` under ``old`` to its view under
    ``new``: removals of what stops showing, current values of what starts to."""
    out: list[Op] = []
    _diff(view_of(state, old), view_of(state, new), [], out)
    return out


def _diff(a: dict[str, Any], b: dict[str, Any], path: Path, out: list[Op]) -> None:
    for key in a:
        if key not in b:
            out.append([DEL, [*path, key]])
    for key, value in b.items():
        here = a.get(key, _MISSING)
        if here is value:
            continue
        if type(here) is dict and type(value) is dict:
            _diff(here, value, [*path, key], out)
        elif here is _MISSING or not _same(here, value):
            out.append([SET, [*path, key], value])


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def wire_prefixes(spec_prefixes: Sequence[Sequence[str]]) -> list[list[str]]:
    """Prefixes in a canonical order, duplicates and those under another dropped."""
    unique = sorted({tuple(p) for p in spec_prefixes}, key=lambda p: (len(p), p))
    out: list[tuple[str, ...]] = []
    for p in unique:
        if not any(p[: len(q)] == q for q in out):
            out.append(p)
    return [list(p) for p in sorted(out)]

"""Hypothesis strategies and an independent reference model of the ops (docs/protocol.md §3).

The reference model deliberately shares nothing with protocol/ops.py: it is a
pure function that copies every container on the path instead of editing in
place with an undo log, so the two can only agree by both being right.
"""

from __future__ import annotations

import contextlib
import copy
import math
from typing import Any

from hypothesis import strategies as st

MAX_SAFE_INT = 2**53 - 1

keys = st.sampled_from(["a", "b", "c", "x", "", "é", "k1"]) | st.text(max_size=4)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INT, MAX_SAFE_INT)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)

values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=12,
)

documents: st.SearchStrategy[dict[str, Any]] = st.dictionaries(keys, values, max_size=5)

#: Field names of the message maps, so fuzzed maps hit the decoders' checks.
FIELD_NAMES = ["v", "role", "token", "client", "resume", "epoch", "seq", "acked", "sync", "x"]

wild_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.sampled_from(["agent", "spectator", "snapshot", "replay", "current", "abcdefgh"])
    | st.binary(max_size=3),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(FIELD_NAMES), children, max_size=4)
    ),
    max_leaves=8,
)


def same(a: Any, b: Any) -> bool:
    """Equal with types: 1, 1.0 and True differ, as they do on the wire."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is float:
        return math.copysign(1.0, a) == math.copysign(1.0, b) and a == b
    return bool(a == b)


class RefError(Exception):
    """The reference model refuses an op."""


def _seg_ok(seg: Any) -> bool:
    return type(seg) is str or type(seg) is int


def ref_apply(doc: dict[str, Any], op: list[Any]) -> dict[str, Any]:
    """Return a new document with ``op`` applied, or raise RefError. Never edits ``doc``."""
    kind, path = op[0], op[1]
    if type(path) is not list or not path or not all(_seg_ok(s) for s in path):
        raise RefError("bad path")
    value = copy.deepcopy(op[2]) if kind != 1 else None
    return _ref(doc, path, kind, value)


def _ref(node: Any, path: list[Any], kind: int, value: Any) -> Any:
    seg, rest = path[0], path[1:]
    if rest:
        if type(node) is dict:
            if type(seg) is not str:
                raise RefError("int into map")
            if seg in node:
                child = node[seg]
            elif kind == 0:
                child = {}
            else:
                raise RefError("missing key")
            out = dict(node)
            out[seg] = _ref(child, rest, kind, value)
            return out
        if type(node) is list:
            if type(seg) is not int or not 0 <= seg < len(node):
                raise RefError("bad index")
            out_list = list(node)
            out_list[seg] = _ref(node[seg], rest, kind, value)
            return out_list
        raise RefError("not a container")
    if kind == 0:
        if type(node) is dict and type(seg) is str:
            out = dict(node)
            out[seg] = value
            return out
        if type(node) is list and type(seg) is int and 0 <= seg < len(node):
            return [*node[:seg], value, *node[seg + 1 :]]
        raise RefError("set")
    if kind == 1:
        if type(node) is dict and type(seg) is str and seg in node:
            return {k: v for k, v in node.items() if k != seg}
        if type(node) is list and type(seg) is int and 0 <= seg < len(node):
            return node[:seg] + node[seg + 1 :]
        raise RefError("del")
    if kind == 2:
        if type(node) is list and type(seg) is int:
            index = len(node) if seg == -1 else seg
            if 0 <= index <= len(node):
                return [*node[:index], value, *node[index:]]
        raise RefError("ins")
    raise RefError("kind")


def ref_apply_all(doc: dict[str, Any], ops: list[list[Any]]) -> dict[str, Any]:
    for op in ops:
        doc = ref_apply(doc, op)
    return doc


def paths_of(node: Any, prefix: tuple[Any, ...] = ()) -> list[list[Any]]:
    """Every path that exists in ``node`` (to map keys and list items)."""
    out: list[list[Any]] = []
    if type(node) is dict:
        for k, v in node.items():
            out.append([*prefix, k])
            out.extend(paths_of(v, (*prefix, k)))
    elif type(node) is list:
        for i, v in enumerate(node):
            out.append([*prefix, i])
            out.extend(paths_of(v, (*prefix, i)))
    return out


@st.composite
def op_for(draw: st.DrawFn, doc: dict[str, Any], valid_bias: bool = True) -> list[Any]:
    """An op aimed at ``doc``: usually at a path that exists, sometimes anywhere."""
    existing = paths_of(doc)
    kind = draw(st.sampled_from([0, 1, 2]))
    if existing and draw(st.integers(0, 9)) < (8 if valid_bias else 4):
        path = list(draw(st.sampled_from(existing)))
        tweak = draw(st.integers(0, 5))
        if tweak == 0:
            path = [*path, draw(keys)]  # a new key below an existing node
        elif tweak == 1 and type(path[-1]) is int:
            path[-1] = draw(st.sampled_from([-1, path[-1] + 1, path[-1] - 1]))
    else:
        path = draw(st.lists(keys | st.integers(-2, 4), min_size=1, max_size=3))
    if kind == 1:
        return [1, path]
    return [kind, path, draw(values)]


@st.composite
def doc_and_ops(
    draw: st.DrawFn, max_ops: int = 6, valid_bias: bool = True
) -> tuple[dict[str, Any], list[list[Any]]]:
    """A document and ops aimed at the states it passes through (each usually valid)."""
    doc = draw(documents)
    ops: list[list[Any]] = []
    current = doc
    for _ in range(draw(st.integers(0, max_ops))):
        op = draw(op_for(current, valid_bias))
        ops.append(op)
        with contextlib.suppress(RefError):
            current = ref_apply(current, op)
    return doc, ops

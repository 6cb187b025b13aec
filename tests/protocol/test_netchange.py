"""Net-change catch-up (protocol/netchange.py): the state at any cursor within the horizon,
plus the net change since it, is the state at the head."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from statecast.protocol import ops
from statecast.protocol.errors import Rejection
from statecast.protocol.netchange import ChangeIndex, apply_net_change

KEYS = st.sampled_from(["a", "b", "c"])
LEAF = st.one_of(st.integers(-3, 3), st.sampled_from(["x", "y"]), st.none())
VALUE = st.recursive(
    LEAF,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)),
    max_leaves=6,
)
SEGMENT = st.one_of(KEYS, st.integers(-1, 3))
OP = st.one_of(
    st.tuples(st.just(ops.SET), st.lists(SEGMENT, min_size=1, max_size=4), VALUE),
    st.tuples(st.just(ops.DEL), st.lists(SEGMENT, min_size=1, max_size=4)),
    st.tuples(st.just(ops.INS), st.lists(SEGMENT, min_size=1, max_size=4), VALUE),
)


def run(
    start: dict[str, Any], diffs: list[list[tuple[Any, ...]]], depth: int = 0
) -> tuple[list[dict[str, Any]], ChangeIndex]:
    """Apply each diff (ops that the state refuses are left out, as a room refuses them);
    return the state after each seq (index 0: the start) and the index."""
    state = copy.deepcopy(start)
    states = [copy.deepcopy(state)]
    index = ChangeIndex(0, depth=depth)
    for seq, diff in enumerate(diffs, 1):
        for raw in diff:
            op = ops.parse_op(list(raw))
            undo: list[ops.Undo] = []
            try:
                ops.apply_op(state, op, undo)
            except Rejection:
                ops.rollback(undo)
                continue
            index.record(seq, op[0], op[1])
        states.append(copy.deepcopy(state))
    return states, index


@settings(max_examples=300, deadline=None)
@given(
    start=st.dictionaries(KEYS, VALUE, max_size=3),
    diffs=st.lists(st.lists(OP, min_size=1, max_size=3), max_size=12),
    depth=st.sampled_from([0, 0, 1, 2]),
)
def test_state_at_any_cursor_plus_the_net_change_is_the_head(
    start: dict[str, Any], diffs: list[list[tuple[Any, ...]]], depth: int
) -> None:
    """Whatever entry depth a room type chooses (0: each op's own path)."""
    states, index = run(start, diffs, depth)
    head = states[-1]
    for cursor, at_cursor in enumerate(states):
        net = index.net_change(head, cursor)
        assert net is not None
        client = copy.deepcopy(at_cursor)
        apply_net_change(client, ops.parse_ops(copy.deepcopy(net)))
        assert client == head, (cursor, net)
        if cursor == len(states) - 1:
            assert net == []
        # A net change from an older seq brings any later state to the head too (a
        # client may apply a PATCH from before the state it holds, docs/protocol.md §5.11).
        for later in states[cursor + 1 :]:
            client = copy.deepcopy(later)
            apply_net_change(client, ops.parse_ops(copy.deepcopy(net)))
            assert client == head


@settings(max_examples=100, deadline=None)
@given(
    start=st.dictionaries(KEYS, VALUE, max_size=3),
    diffs=st.lists(st.lists(OP, min_size=1, max_size=3), min_size=2, max_size=12),
    cut=st.integers(0, 12),
)
def test_past_the_horizon_there_is_no_net_change_and_within_it_still_one(
    start: dict[str, Any], diffs: list[list[tuple[Any, ...]]], cut: int
) -> None:
    states, index = run(start, diffs)
    cut = min(cut, len(states) - 1)
    index.trim(cut)
    head = states[-1]
    for cursor, at_cursor in enumerate(states):
        net = index.net_change(head, cursor)
        if cursor < cut:
            assert net is None
            continue
        assert net is not None
        client = copy.deepcopy(at_cursor)
        apply_net_change(client, ops.parse_ops(copy.deepcopy(net)))
        assert client == head


def test_tombstones_and_covered_entries() -> None:
    """Deleted and re-created, deleted twice over, a parent deleted after its child changed,
    a list replaced: each as a set or a del of the outermost entry, and nothing more."""
    start: dict[str, Any] = {"items": {"i1": {"n": 0}, "i2": {"n": 0}}, "log": [1, 2]}
    diffs = [
        [(ops.SET, ["items", "i1", "n"], 1)],  # 1
        [(ops.DEL, ["items", "i2"])],  # 2: a tombstone
        [(ops.SET, ["items", "i2"], {"n": 5})],  # 3: re-created
        [(ops.SET, ["items", "i1", "n"], 2)],  # 4
        [(ops.DEL, ["items", "i1"])],  # 5: the parent goes after its child changed
        [(ops.INS, ["log", -1], 3)],  # 6: a list is one entry
        [(ops.SET, ["new", "deep", "x"], 1)],  # 7: creates "new" and "new.deep"
        [(ops.DEL, ["new", "deep", "x"])],  # 8: they stay, as {"deep": {}}
    ]
    states, index = run(start, diffs)
    head = states[-1]
    net = index.net_change(head, 0)
    assert net is not None
    assert sorted(net, key=str) == sorted(
        [
            [ops.SET, ["new", "deep"], {}],
            [ops.SET, ["log"], [1, 2, 3]],
            [ops.SET, ["items", "i2"], {"n": 5}],
            [ops.DEL, ["items", "i1"]],
        ],
        key=str,
    )
    assert index.net_change(head, 7) == [[ops.DEL, ["new", "deep", "x"]]]
    assert index.net_change(head, 8) == []

"""Views (protocol/views.py): a view subscriber's copy equals the view of the room's state.

The server cuts each batch's net change to every view (docs/protocol.md §5.12); these
properties run random op sequences, batches and views (prefixes above, at and below the
changed paths, private parts, view changes mid-stream) and compare the subscriber's copy
with the view computed from the room's whole state after every batch.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from statecast.protocol import ops
from statecast.protocol.errors import Rejection
from statecast.protocol.netchange import apply_net_change
from statecast.protocol.views import (
    ALL,
    apply_view_ops,
    change_view,
    check_prefixes,
    covers,
    cut_batch,
    effective,
    from_prefixes,
    restrict,
    view_of,
    visible,
)

from .test_netchange import KEYS, OP, VALUE, run

# Ops on map paths mostly, so that they hit the views' prefixes (at, above and below).
MAP_PATH = st.lists(KEYS, min_size=1, max_size=3)
MAP_OP = st.one_of(
    st.tuples(st.just(ops.SET), MAP_PATH, VALUE),
    st.tuples(st.just(ops.DEL), MAP_PATH),
)
ANY_OP = st.one_of(MAP_OP, MAP_OP, OP)
PREFIX = st.lists(KEYS, max_size=3)
PREFIXES = st.lists(PREFIX, min_size=1, max_size=3)
PRIVATE = st.sampled_from([[], [["a", "{client}"]], [["b", "c", "{client}"]], [["{client}"]]])
CLIENT = st.sampled_from([None, "a", "b", "c"])
SPEC = st.builds(
    lambda asked, granted, private, client: effective(asked, granted, private, client),
    st.none() | PREFIXES,
    st.none() | PREFIXES,
    PRIVATE,
    CLIENT,
)


def apply(client: dict[str, Any], net: list[Any]) -> None:
    apply_net_change(client, ops.parse_ops(copy.deepcopy(net)))


def apply_live(client: dict[str, Any], cut: list[Any]) -> None:
    apply_view_ops(client, ops.parse_ops(copy.deepcopy(cut)))


def run_raw(
    start: dict[str, Any], diffs: list[list[tuple[Any, ...]]]
) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    """Apply each diff as a room would (refused ops left out); the state after each seq
    (index 0: the start) and the ops each seq applied, in wire form."""
    state = copy.deepcopy(start)
    states, applied = [copy.deepcopy(state)], [[]]
    for diff in diffs:
        done = []
        for raw in diff:
            op = ops.parse_op(list(raw))
            undo: list[ops.Undo] = []
            try:
                ops.apply_op(state, op, undo)
            except Rejection:
                ops.rollback(undo)
                continue
            done.append(copy.deepcopy(list(raw)))
        states.append(copy.deepcopy(state))
        applied.append(done)
    return states, applied


@settings(max_examples=400, deadline=None)
@given(
    start=st.dictionaries(KEYS, VALUE, max_size=3),
    diffs=st.lists(st.lists(ANY_OP, min_size=1, max_size=3), max_size=12),
    cuts=st.lists(st.integers(1, 12), max_size=6),
    specs=st.lists(SPEC, min_size=1, max_size=3),
)
# The removal of a prefix's value removes the map that held only it.
@example({"a": {"b": 1}}, [[(1, ["a", "b"])]], [], [from_prefixes([["a", "b"]])])
# A set out of sight creates maps on its way: they must not show.
@example(
    {},
    [[(0, ["a"], {}), (0, ["b", "c", "a"], {})]],
    [],
    [effective(None, None, [["b", "c", "{client}"]], "x")],
)
# An op above a prefix after ops under it in the same batch: its value holds theirs.
@example(
    {"a": {"b": [1]}},
    [[(2, ["a", "b", -1], 2), (0, ["a"], {"b": [], "c": 1})]],
    [],
    [from_prefixes([["a", "b"]])],
)
# Ops under a prefix after a set above it: they apply only to that set's value.
@example(
    {"a": {}}, [[(0, ["a"], {"b": []}), (2, ["a", "b", 0], 1)]], [], [from_prefixes([["a", "b"]])]
)
# A prefix removed, then set again under it, in one batch.
@example(
    {"a": {"b": 1, "c": 2}},
    [[(1, ["a", "b"]), (0, ["a", "b", "x"], 1)], [(1, ["a", "c"])]],
    [],
    [from_prefixes([["a", "b"]])],
)
def test_a_view_copy_is_the_view_of_the_state_after_every_batch(
    start: dict[str, Any],
    diffs: list[list[tuple[Any, ...]]],
    cuts: list[int],
    specs: list[Any],
) -> None:
    """Batches end at random seqs; each batch's ops are cut to the view (VIEW_DIFF, live)
    and the view changes at some batch ends (VIEW_SET's ops)."""
    states, applied = run_raw(start, diffs)
    head = len(states) - 1
    ends = sorted({c for c in cuts if c <= head} | {head})
    spec = specs[0]
    copy_ = copy.deepcopy(view_of(states[0], spec))
    last = 0
    for n, end in enumerate(ends):
        if end > last:
            batch = [op for seq in range(last + 1, end + 1) for op in applied[seq]]
            apply_live(copy_, cut_batch(batch, states[end], spec))
            assert copy_ == view_of(states[end], spec), (last, end, batch)
            last = end
        new = specs[(n + 1) % len(specs)]
        apply(copy_, change_view(states[end], spec, new))
        spec = new
        assert copy_ == view_of(states[end], spec)


@settings(max_examples=300, deadline=None)
@given(
    start=st.dictionaries(KEYS, VALUE, max_size=3),
    diffs=st.lists(st.lists(ANY_OP, min_size=1, max_size=3), max_size=10),
    spec=SPEC,
)
@example(
    {"a": {"b": 1, "c": 2}}, [[(1, ["a", "b"])], [(1, ["a", "c"])]], from_prefixes([["a", "b"]])
)
def test_resume_with_a_view_from_any_seq_is_the_view_at_the_head(
    start: dict[str, Any], diffs: list[list[tuple[Any, ...]]], spec: Any
) -> None:
    """A view's catch-up (its net change since the client's seq) from any cursor, and from
    any older one (a PATCH may start before the client's seq)."""
    states, index = run(start, diffs)
    head = states[-1]
    for cursor in range(len(states)):
        net = index.net_change(head, cursor)
        assert net is not None
        cut = restrict(net, head, spec)
        for held in states[cursor:]:
            copy_ = copy.deepcopy(view_of(held, spec))
            apply(copy_, cut)
            assert copy_ == view_of(head, spec)


def test_a_view_shows_no_empty_map_on_the_way_to_a_prefix() -> None:
    spec = from_prefixes([["players", "p7"]])
    assert view_of({"players": {"p8": 1}}, spec) == {}
    assert view_of({"players": {"p7": {}}, "board": 1}, spec) == {"players": {"p7": {}}}
    assert view_of({"players": 5}, spec) == {}


def test_an_op_above_a_prefix_is_cut_to_the_view() -> None:
    spec = from_prefixes([["board"], ["players", "p7"]])
    state = {"players": {"p7": {"hp": 3}, "p8": {"hp": 9}}, "board": [1], "log": "x"}
    net = [[ops.SET, ["players"], state["players"]], [ops.SET, ["log"], "x"]]
    assert restrict(net, state, spec) == [[ops.SET, ["players"], {"p7": {"hp": 3}}]]
    # Removing the last visible part removes the map that held it.
    state2: dict[str, Any] = {"players": {"p8": {}}}
    assert restrict([[ops.DEL, ["players", "p7"]]], state2, spec) == [[ops.DEL, ["players"]]]


def test_private_parts_show_only_to_their_agent_and_to_grants_that_name_them() -> None:
    private = [["hands", "{client}"]]
    state = {"hands": {"p7": [1, 2], "p8": [3]}, "table": [9]}
    assert view_of(state, effective(None, None, private, "p7")) == {
        "hands": {"p7": [1, 2]},
        "table": [9],
    }
    assert view_of(state, effective(None, None, private, None)) == {"table": [9]}
    judge = effective(None, [["hands"], ["table"]], private, "judge")
    assert view_of(state, judge) == state
    # A grant of the whole state ([]) does not name the private area.
    assert view_of(state, effective(None, [[]], private, "x")) == {"table": [9]}


def test_a_grant_bounds_what_may_be_asked() -> None:
    grant = from_prefixes([["players", "p7"]])
    assert covers(grant, from_prefixes([["players", "p7", "hp"]]))
    assert not covers(grant, from_prefixes([["players"]]))
    assert not covers(grant, ALL)
    assert visible({"x": 1}, None) is not None


@pytest.mark.parametrize(
    "bad",
    [[], "board", [["a", 1]], [[["a"]]], [["a"]] * 65, [["k"] * 33]],
)
def test_a_malformed_view_is_refused_naming_the_rule(bad: Any) -> None:
    with pytest.raises(ValueError, match="prefix"):
        check_prefixes(bad)

"""statecast.protocol.ops: values, paths, op parsing and all-or-nothing application (no sockets)."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statecast.protocol import ops
from statecast.protocol.errors import Rejection
from tests.protocol.strategies import (
    RefError,
    doc_and_ops,
    documents,
    ref_apply,
    ref_apply_all,
    same,
    values,
)


def code_of(fn: Any, *args: Any) -> str:
    with pytest.raises(Rejection) as info:
        fn(*args)
    return info.value.code


# --- values ----------------------------------------------------------------------------------


def test_clone_value_accepts_state_values_and_copies_containers() -> None:
    """Every JSON-compatible value is accepted and containers come back as private copies."""
    inner = [1, 2.5, "s", None, True]
    value = {"k": inner, "t": (1, 2)}
    out = ops.clone_value(value)
    assert out == {"k": [1, 2.5, "s", None, True], "t": [1, 2]}
    assert out["k"] is not inner
    assert type(out["t"]) is list


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (2**53, "invalid"),
        (-(2**53), "invalid"),
        (math.nan, "invalid"),
        (math.inf, "invalid"),
        (b"bytes", "invalid"),
        ({1: "x"}, "invalid"),
        ({"a": {2: 1}}, "invalid"),
        (object(), "invalid"),
        ({1, 2}, "invalid"),
    ],
)
def test_clone_value_rejects_non_state_values(value: Any, code: str) -> None:
    """Out-of-range ints, NaN, infinity, bytes, non-str keys and other types are invalid."""
    assert code_of(ops.clone_value, value) == code
    assert not ops.is_state_value(value)
    with pytest.raises(Rejection):
        ops.check_value(value)


def test_safe_int_bounds_are_accepted() -> None:
    """±(2^53 - 1) are the largest ints a state may hold."""
    assert ops.is_state_value(2**53 - 1) and ops.is_state_value(-(2**53 - 1))
    ops.check_value([2**53 - 1])


def test_nesting_limit_is_too_large() -> None:
    """A value nested deeper than the limit is too_large; exactly at the limit it is fine."""
    deep: Any = 1
    for _ in range(3):
        deep = [deep]
    assert ops.is_state_value(deep, 3)
    assert code_of(ops.clone_value, deep, 2) == "too_large"
    assert code_of(ops.clone_value, {"a": {"b": {}}}, 2) == "too_large"


# --- paths and parsing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("a", "invalid"),
        ([], "invalid"),
        (["a", 1.5], "invalid"),
        (["a", None], "invalid"),
        (["a", True], "invalid"),
        (["a"] * 65, "too_large"),
    ],
)
def test_check_path_rejects(path: Any, code: str) -> None:
    """A path is a non-empty list of str and int, at most max_depth long."""
    assert code_of(ops.check_path, path) == code


def test_check_path_accepts_tuples_and_returns_a_list() -> None:
    """A tuple path is accepted and returned as a fresh list."""
    assert ops.check_path(("a", 0)) == ["a", 0]
    assert ops.check_path(["a"] * 64) == ["a"] * 64


@pytest.mark.parametrize(
    "raw",
    [
        "op",
        [],
        ["0", ["a"], 1],
        [1, ["a"], 2],
        [0, ["a"]],
        [2, ["a"]],
        [3, ["a"], 1],
        [0, [], 1],
        [0, ["a"], math.nan],
    ],
)
def test_parse_op_rejects_malformed_ops(raw: Any) -> None:
    """Wrong shapes, unknown kinds, empty paths and bad values are invalid."""
    assert code_of(ops.parse_op, raw) == "invalid"


def test_parse_op_copies_the_value_and_limits_its_depth_by_the_path() -> None:
    """The parsed value is private, and path length plus value depth may not pass max_depth."""
    value = {"x": [1]}
    parsed = ops.parse_op((0, ("a",), value))
    assert parsed == [0, ["a"], {"x": [1]}]
    assert parsed[2] is not value
    assert ops.parse_op([1, ["a"]]) == [1, ["a"]]
    assert code_of(ops.parse_op, [0, ["a", "b"], [[1]]], 3) == "too_large"
    ops.parse_op([0, ["a"], [[1]]], 3)


def test_parse_ops_needs_a_list() -> None:
    """The op list itself must be a list (or tuple)."""
    assert code_of(ops.parse_ops, {"0": 1}) == "invalid"
    assert ops.parse_ops(()) == []


# --- applying ---------------------------------------------------------------------------------


def apply(state: dict[str, Any], *raw: list[Any]) -> dict[str, Any]:
    ops.apply_wire_ops(state, list(raw))
    return state


def test_set_creates_intermediate_maps_and_replaces() -> None:
    """set creates missing intermediate maps, and replaces map keys and list items."""
    assert apply({}, [0, ["a", "b", "c"], 1]) == {"a": {"b": {"c": 1}}}
    assert apply({"l": [1, 2]}, [0, ["l", 1], "x"]) == {"l": [1, "x"]}
    assert apply({"a": 1}, [0, ["a"], 2]) == {"a": 2}


def test_del_removes_keys_and_items() -> None:
    """del removes a map key or a list item."""
    assert apply({"a": 1, "b": 2}, [1, ["a"]]) == {"b": 2}
    assert apply({"l": [1, 2, 3]}, [1, ["l", 1]]) == {"l": [1, 3]}


def test_ins_inserts_and_appends() -> None:
    """ins inserts before the index; -1 and len(list) append."""
    assert apply({"l": [1, 3]}, [2, ["l", 1], 2]) == {"l": [1, 2, 3]}
    assert apply({"l": [1]}, [2, ["l", -1], 2], [2, ["l", 2], 3]) == {"l": [1, 2, 3]}
    assert apply({"l": []}, [2, ["l", 0], "x"]) == {"l": ["x"]}


@pytest.mark.parametrize(
    ("state", "op"),
    [
        ({}, [1, ["a"]]),
        ({}, [1, ["a", "b"]]),
        ({}, [2, ["a", 0], 1]),
        ({"a": 1}, [0, ["a", "b"], 1]),
        ({"a": 1}, [0, ["a", "b", "c"], 1]),
        ({"l": [1]}, [1, ["l", 0, "x", "y"]]),
        ({"a": 1}, [1, ["a", "b"]]),
        ({"a": 1}, [2, ["a", 0], 1]),
        ({"a": {}}, [0, ["a", 0], 1]),
        ({"a": {}}, [1, ["a", 0]]),
        ({"a": {}}, [2, ["a", 0], 1]),
        ({"l": [1]}, [0, ["l", 1], 1]),
        ({"l": [1]}, [0, ["l", "x"], 1]),
        ({"l": [1]}, [1, ["l", 1]]),
        ({"l": [1]}, [1, ["l", -1]]),
        ({"l": [1]}, [1, ["l", "x"]]),
        ({"l": [1]}, [2, ["l", 2], 1]),
        ({"l": [1]}, [2, ["l", -2], 1]),
        ({"l": [1]}, [2, ["l", "x"], 1]),
        ({"l": [[1]]}, [0, ["l", 1, 0], 1]),
        ({"l": [[1]]}, [0, ["l", "x", 0], 1]),
        ({"m": {}}, [0, ["m", 0, "x"], 1]),
        ({}, [0, [0], 1]),
    ],
)
def test_ops_that_do_not_apply_are_invalid(state: dict[str, Any], op: list[Any]) -> None:
    """Missing keys, non-containers, wrong segment types and bad indexes are invalid."""
    before = copy.deepcopy(state)
    assert code_of(ops.apply_wire_ops, state, [op]) == "invalid"
    assert state == before


def test_failed_op_list_rolls_back_every_change() -> None:
    """A list whose last op fails leaves the state exactly as before, created maps included."""
    state: dict[str, Any] = {"l": [1, 2], "m": {"k": "v"}}
    before = copy.deepcopy(state)
    bad = [
        [0, ["new", "deep"], 1],
        [0, ["m", "k"], "w"],
        [1, ["m", "k"]],
        [2, ["l", 0], 0],
        [1, ["l", 0]],
        [0, ["l", 0], 9],
        [1, ["missing"]],
    ]
    assert code_of(ops.apply_wire_ops, state, bad) == "invalid"
    assert state == before


def test_apply_op_refuses_an_unknown_kind() -> None:
    """apply_op, given an op parse_op would refuse, still refuses an unknown kind."""
    undo: list[ops.Undo] = []
    with pytest.raises(Rejection):
        ops.apply_op({}, [7, ["a"], 1], undo)
    assert undo == []


def test_apply_ops_rolls_back_on_any_exception() -> None:
    """Not only a Rejection: any exception while applying reverts what was applied."""
    state: dict[str, Any] = {"a": 1}

    def ops_then_boom() -> Any:
        yield [0, ["a"], 2]
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        ops.apply_ops(state, ops_then_boom())
    assert state == {"a": 1}


# --- properties -------------------------------------------------------------------------------


@settings(max_examples=200)
@given(doc_and_ops(valid_bias=False))
def test_apply_is_all_or_nothing(case: tuple[dict[str, Any], list[list[Any]]]) -> None:
    """On Rejection the state equals a deep copy of the original; otherwise the reference's."""
    doc, raw = case
    state = copy.deepcopy(doc)
    try:
        ops.apply_wire_ops(state, raw)
    except Rejection:
        assert same(state, doc)
        with pytest.raises(RefError):
            ref_apply_all(doc, raw)
    else:
        assert same(state, ref_apply_all(doc, raw))


@settings(max_examples=200)
@given(doc_and_ops(max_ops=12))
def test_ops_match_the_reference_model(case: tuple[dict[str, Any], list[list[Any]]]) -> None:
    """Applying ops one by one agrees with an independent copy-on-write model, op for op."""
    doc, raw = case
    state = copy.deepcopy(doc)
    model = doc
    for op in raw:
        try:
            model = ref_apply(model, op)
        except RefError:
            with pytest.raises(Rejection):
                ops.apply_wire_ops(state, [op])
            assert same(state, model)
            continue
        ops.apply_wire_ops(state, [op])
        assert same(state, model)
    assert same(doc, copy.deepcopy(doc))  # the input itself was never touched by the model


@given(values)
def test_state_values_clone_exactly(value: Any) -> None:
    """Any generated state value clones to an equal value of the same types."""
    assert same(ops.clone_value(value), value)


@given(documents, st.lists(st.sampled_from(["a", 0, "b"]), min_size=1, max_size=4), values)
def test_set_then_read_back(doc: dict[str, Any], path: list[Any], value: Any) -> None:
    """After a successful set, the value is found at its path."""
    state = copy.deepcopy(doc)
    try:
        ops.apply_wire_ops(state, [[0, path, value]])
    except Rejection:
        assert same(state, doc)
        return
    node: Any = state
    for seg in path:
        node = node[seg]
    assert same(node, value)

"""The read-only view a handler sees of the state (server/state_view.py)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from statecast.server.state_view import StateMutation, view

STATE: dict[str, Any] = {"m": {"k": 1, "inner": {"x": [1, 2]}}, "l": [{"a": 1}, 2, "s"], "n": 3}

MUTATIONS: list[tuple[str, Callable[[Any], object]]] = [
    ("setitem", lambda s: s.__setitem__("n", 4)),
    ("nested setitem", lambda s: s["m"]["inner"].__setitem__("y", 1)),
    ("delitem", lambda s: s["m"].__delitem__("k")),
    ("pop", lambda s: s["m"].pop("k")),
    ("popitem", lambda s: s["m"].popitem()),
    ("setdefault", lambda s: s["m"].setdefault("z", 1)),
    ("update", lambda s: s["m"].update(z=1)),
    ("clear", lambda s: s["m"].clear()),
    ("list append", lambda s: s["l"].append(1)),
    ("list of list append", lambda s: s["m"]["inner"]["x"].append(3)),
    ("list setitem", lambda s: s["l"].__setitem__(1, 5)),
    ("list delitem", lambda s: s["l"].__delitem__(0)),
    ("list extend", lambda s: s["l"].extend([1])),
    ("list insert", lambda s: s["l"].insert(0, 1)),
    ("list pop", lambda s: s["l"].pop()),
    ("list remove", lambda s: s["l"].remove(2)),
    ("list sort", lambda s: s["m"]["inner"]["x"].sort()),
    ("list reverse", lambda s: s["l"].reverse()),
    ("map in a list", lambda s: s["l"][0].__setitem__("a", 2)),
    ("map reached by get", lambda s: s.get("m").__setitem__("k", 2)),
    ("map reached by values", lambda s: next(iter(s.values())).__setitem__("k", 2)),
    ("map reached by items", lambda s: next(iter(s.items()))[1].__setitem__("k", 2)),
    ("map reached by iterating a list", lambda s: next(iter(s["l"])).__setitem__("a", 2)),
    ("map in a slice", lambda s: s["l"][0:1][0].__setitem__("a", 2)),
    ("shallow copy", lambda s: copy.copy(s["m"])),
]


@pytest.mark.parametrize(("what", "mutate"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_every_in_place_change_is_refused_and_names_ctx_set(
    what: str, mutate: Callable[[Any], object]
) -> None:
    state = copy.deepcopy(STATE)
    with pytest.raises(StateMutation) as refused:
        mutate(view(state))
    assert "ctx.set" in str(refused.value)
    assert state == STATE


def test_a_view_reads_like_the_state() -> None:
    state = copy.deepcopy(STATE)
    v = view(state)
    assert isinstance(v, Mapping) and isinstance(v["l"], Sequence)
    assert v == state and v["m"] == state["m"] and v["l"][-1] == "s"
    assert dict(v["m"]["inner"]) == {"x": [1, 2]}
    assert sorted(v) == ["l", "m", "n"] and len(v["l"]) == 3
    assert v.get("missing", 7) == 7 and "m" in v and {"a": 1} in v["l"]
    assert [k for k, _ in v.items()] == list(state)


def test_a_deep_copy_is_plain_and_the_handlers_own() -> None:
    state = copy.deepcopy(STATE)
    mine = copy.deepcopy(view(state)["m"])
    assert type(mine) is dict and type(mine["inner"]["x"]) is list
    mine["inner"]["x"].append(3)
    assert state == STATE


def test_keys_and_indexes_give_no_way_around_the_view() -> None:
    state = copy.deepcopy(STATE)
    v = view(state)
    mapping = getattr(v.keys(), "mapping", v.keys())  # a dict's keys() would expose the dict
    with pytest.raises((StateMutation, TypeError)):
        mapping["n"] = 5
    # The way out a dict's keys() gave: its .mapping hands out the raw maps inside.
    escape = getattr(v.keys(), "mapping", None)
    if escape is not None:
        with contextlib.suppress(StateMutation, TypeError):
            escape["m"]["k"] = 5
    assert v["l"][-1] == "s"
    with pytest.raises(IndexError):
        v["l"][-4]
    assert state == STATE

"""The view groups' dispatch (server/view_groups.py): a batch skips only groups whose cut
of it is empty, so skipping them changes no subscriber's view."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from statecast.protocol.views import cut_batch, spec_key
from statecast.server.view_groups import Dispatch, ViewGroup
from tests.protocol.test_netchange import KEYS, VALUE
from tests.protocol.test_views import ANY_OP, SPEC, run_raw


@settings(max_examples=300, deadline=None)
@given(
    start=st.dictionaries(KEYS, VALUE, max_size=3),
    diffs=st.lists(st.lists(ANY_OP, min_size=1, max_size=3), min_size=1, max_size=4),
    specs=st.lists(SPEC, min_size=1, max_size=6),
)
def test_a_group_the_dispatch_skips_has_nothing_to_get(
    start: dict[str, Any], diffs: list[list[tuple[Any, ...]]], specs: list[Any]
) -> None:
    states, applied = run_raw(start, diffs)
    batch = [op for ops in applied for op in ops]
    groups = {spec_key(s): ViewGroup(s, 0) for s in specs}
    reached = set(Dispatch(list(groups.values())).reached([op[1] for op in batch]))
    for group in groups.values():
        if group not in reached:
            assert cut_batch(batch, states[-1], group.spec) == [], group.spec


def test_views_on_different_parts_are_reached_only_by_their_own_changes() -> None:
    from statecast.protocol.views import from_prefixes

    zones = [ViewGroup(from_prefixes([["zones", f"z{i}"]]), 0) for i in range(100)]
    dispatch = Dispatch(zones)
    assert dispatch.reached([["zones", "z7", "c1"]]) == [zones[7]]
    assert set(dispatch.reached([["zones"]])) == set(zones)
    assert dispatch.reached([["elsewhere"]]) == []

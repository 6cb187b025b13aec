"""Drained observers' counts from seq logs agree with the sampled observers' per-update view."""

from __future__ import annotations

import random

from statecast.loadtest.accounting import Ledger, count_frames
from statecast.loadtest.observers import Tally, View
from statecast.loadtest.scenario import Timeline, agent_name

# Three agents at 5 actions/s each, window [1 s, 3 s): agent a's n-th action is due at
# start + phase + n * 200 ms.
TIMELINE = Timeline(
    start=0, t0=1_000_000, t1=3_000_000, end=4_000_000, period=200_000, phases=(0, 70_000, 140_000)
)
AGENTS = len(TIMELINE.phases)


def _actions() -> list[tuple[int, int, int]]:
    """Every action of the run as (seq, agent, n), applied in deadline order."""
    due = sorted(
        (TIMELINE.deadline(a, n), a, n)
        for a in range(AGENTS)
        for n in range(TIMELINE.last_n(a) + 1)
    )
    return [(seq, a, n) for seq, (_, a, n) in enumerate(due, start=1)]


def _state_at(actions: list[tuple[int, int, int]], seq: int) -> dict[str, object]:
    agents: dict[str, object] = {}
    for s, a, n in actions:
        if s <= seq:
            agents[agent_name(a)] = {"n": n, "t": 0}
    return {"agents": agents}


def test_polled_states_count_as_the_sampled_view_counts_them() -> None:
    """For random poll sequences, the ledger's counts equal a View fed the same states."""
    actions = _actions()
    ledger = Ledger(actions, [TIMELINE.window(a) for a in range(AGENTS)])
    rng = random.Random(7)
    for _ in range(50):
        seqs = sorted(rng.sample(range(len(actions) + 1), rng.randrange(1, 12)))
        tally = Tally(AGENTS)
        tally.set_timeline(TIMELINE)
        view = View(tally)
        for seq in seqs:
            view.see_state(_state_at(actions, seq), now=0)
        counts = ledger.count([["state", seq] for seq in seqs])
        assert (counts.delivered, counts.coalesced, counts.missed) == (
            tally.delivered,
            tally.coalesced,
            view.missed(),
        )


def test_a_run_delivers_every_window_update_and_a_skip_coalesces() -> None:
    """Join, every DIFF to the end: all delivered; a SNAPSHOT skip coalesces what it jumped."""
    actions = _actions()
    ledger = Ledger(actions, [TIMELINE.window(a) for a in range(AGENTS)])
    in_window = sum(hi - lo for lo, hi in (TIMELINE.window(a) for a in range(AGENTS)))
    last = len(actions)
    whole = ledger.count([["state", 0], ["run", last]])
    assert (whole.delivered, whole.coalesced, whole.missed) == (in_window, 0, 0)
    skipped = ledger.count([["state", 0], ["run", 10], ["state", 20], ["run", last]])
    assert skipped.missed == 0
    assert skipped.delivered + skipped.coalesced == in_window
    assert 0 < skipped.coalesced < 10  # at most the nine diffs 11..19 the SNAPSHOT replaced
    stopped = ledger.count([["state", 0], ["run", last - 6]])
    assert stopped.missed == 6 and stopped.delivered == in_window - 6


def test_a_floor_observer_misses_the_frames_it_never_read() -> None:
    """The floors number nothing: frames short of what the agents sent are missed updates."""
    assert count_frames(frames=100, sent_total=100, applied=40).missed == 0
    short = count_frames(frames=95, sent_total=100, applied=40)
    assert (short.delivered, short.missed) == (35, 5)

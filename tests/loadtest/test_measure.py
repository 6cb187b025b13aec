"""The harness's bookkeeping, without sockets: histograms, windows, coalescing, sweeps."""

from __future__ import annotations

import random

from statecast.loadtest.measure import Histogram, bucket_bounds, bucket_of
from statecast.loadtest.observers import Tally, View
from statecast.loadtest.report import regime
from statecast.loadtest.scenario import Scenario, Timeline, sweep


def test_every_value_falls_inside_its_bucket() -> None:
    """A bucket's bounds hold every value mapped to it, within 1.6% of its width."""
    for value in [*range(300), *random.Random(1).sample(range(10**9), 2000)]:
        low, high = bucket_bounds(bucket_of(value))
        assert low <= value <= high
        assert high - low <= max(1, value // 64)


def test_percentiles_are_close_and_histograms_merge() -> None:
    """Percentiles land within the bucket precision; merging two halves equals the whole."""
    values = list(range(1, 10_001))
    whole, a, b = Histogram(), Histogram(), Histogram()
    for v in values:
        whole.add(v)
        (a if v % 2 else b).add(v)
    a.merge(b)
    assert a.to_json() == whole.to_json()
    p99 = whole.percentile(99)
    assert p99 is not None and abs(p99 - 9900) <= 9900 / 64
    assert whole.max == 10_000 and Histogram.from_json(whole.to_json()).count == 10_000


def _timeline() -> Timeline:
    # start 0, window [1 s, 3 s), 5 actions/s: agent 0 has phase 0.
    return Timeline(start=0, t0=1_000_000, t1=3_000_000, end=4_000_000, period=200_000, phases=(0,))


def test_window_holds_the_actions_whose_deadline_is_inside() -> None:
    """Counters 5..14 have deadlines in [1 s, 3 s); the agent's last action is 14."""
    t = _timeline()
    assert t.window(0) == (5, 15)
    assert t.last_n(0) == 14
    assert t.deadline(0, 5) == 1_000_000


def test_a_jump_coalesces_exactly_the_window_updates_skipped() -> None:
    """Seeing 3 then 9 then 20 delivers 9, coalesces 5..8 and 10..14, and misses nothing."""
    tally = Tally(1)
    tally.set_timeline(_timeline())
    view = View(tally)
    assert view.see(0, 3, sent=0, now=10)  # before the window: not counted
    assert view.see(0, 9, sent=1_800_000, now=1_900_000)
    assert not view.see(0, 9, sent=1_800_000, now=1_950_000)  # the same update again
    assert tally.delivered == 1 and tally.coalesced == 4
    assert tally.latency.count == 1 and tally.first[(0, 9)] == 100_000
    assert view.missed() == 5  # 10..14 not seen yet
    view.see(0, 20, sent=4_000_000, now=4_000_100)
    assert tally.coalesced == 9 and view.missed() == 0
    assert tally.delivered + tally.coalesced == 10


def test_sweep_drops_runs_that_would_repeat() -> None:
    """Push ignores the poll rate and the floor ignores entities, so they run once each."""
    runs = sweep(
        ["poll", "push", "floor"],
        agents=8,
        rates=[5.0],
        spectators=[12],
        poll_hz=[1.0, 5.0],
        entities=[0, 100],
    )
    modes = [r.mode for r in runs]
    assert modes.count("poll") == 4 and modes.count("push") == 2 and modes.count("floor") == 1
    assert Scenario("poll", spectators=12).observers == 20


def test_regime_names_a_busy_and_a_quiet_room() -> None:
    """Nearly every poll bringing news is a busy room; nearly none is a quiet one."""

    def summary(changed: float) -> dict[str, object]:
        return {
            "scenario": {"mode": "poll"},
            "updates": {"coalesced": 0, "expected": 100},
            "polls": {"changed_fraction": changed, "room_changes_between_polls": 8.0},
        }

    assert regime(summary(0.97)).startswith("busy room")
    assert regime(summary(0.05)).startswith("quiet room")
    assert regime(summary(0.5)).startswith("mixed")

"""Staleness (loadtest/observers.py): every update counts, shown or coalesced away.

A poller that sees an agent at counter 9 after missing 0..8 has included all ten updates
in its view at that moment: each is as stale as the time since it was due. The latency of
"updates seen" counts only the one it showed, which is what made 1 Hz polling look fast.
"""

from __future__ import annotations

from statecast.loadtest.observers import Tally, View
from statecast.loadtest.scenario import Timeline

PERIOD = 100_000  # µs: an agent acting at 10 per second


def test_a_poll_that_skips_updates_counts_each_as_stale_as_it_is() -> None:
    timeline = Timeline(0, 0, 10 * PERIOD, 12 * PERIOD, PERIOD, (0,))
    tally = Tally(1)
    tally.set_timeline(timeline)
    view = View(tally)
    now = timeline.deadline(0, 9) + 1_000  # the poll answers 1 ms after update 9 was due
    assert view.see(0, 9, timeline.deadline(0, 9), now)
    assert tally.latency.count == 1 and tally.latency.max == 1_000  # the one it showed
    assert tally.staleness.count == 10  # every update it now includes
    assert tally.staleness.max == 9 * PERIOD + 1_000  # update 0, due 0.9 s before
    assert tally.coalesced == 9
    # Seeing the same counter again adds nothing; the next one adds one.
    assert not view.see(0, 9, timeline.deadline(0, 9), now + 5)
    assert view.see(0, 10, timeline.deadline(0, 10), timeline.deadline(0, 10) + 7)
    assert tally.staleness.count == 10  # update 10 is outside the window [0, 10)


def test_push_staleness_is_its_delivery_latency() -> None:
    timeline = Timeline(0, 0, 10 * PERIOD, 12 * PERIOD, PERIOD, (0,))
    tally = Tally(1)
    tally.set_timeline(timeline)
    view = View(tally)
    for n in range(10):
        due = timeline.deadline(0, n)
        view.see(0, n, due, due + 2_000)
    assert tally.staleness.count == tally.latency.count == 10
    assert tally.staleness.max == tally.latency.max == 2_000

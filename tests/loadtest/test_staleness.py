"""Staleness (loadtest/observers.py): every update counts, shown or coalesced away.

A poller that sees an agent at counter 9 after missing 0..8 has included all ten updates
in its view at that moment: each is as stale as the time since it was due. The latency of
"updates seen" counts only the one it showed, which is what made 1 Hz polling look fast.
"""

from __future__ import annotations

import json
from pathlib import Path

from statecast.loadtest.observers import Tally, View
from statecast.loadtest.scenario import Timeline
from tests.loadtest.test_commands import _run

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


def test_a_1hz_poller_against_a_real_server_is_up_to_a_period_stale(tmp_path: Path) -> None:
    """One agent at 10 actions/s, polled at 1 Hz, on a real server: every update is counted
    in staleness (shown or skipped), and one due just after a poll waits for the next one,
    at least 0.6 s later (a period less twice its ±20% jitter): with updates 0.1 s apart,
    staleness p99 (here the worst of about 40) is at least 0.5 s whatever the machine, a
    schedule's bound, not a speed. The latency of the few updates shown says far less. The
    per-second figures add up to the whole."""
    path = tmp_path / "b.json"
    done = _run(
        "bench", "--modes", "poll", "--agents", "1", "--rate", "10", "--spectators", "0",
        "--poll-hz", "1", "--duration", "4", "--warmup", "0.5", "--no-live",
        "--json", str(path),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    [s] = json.loads(path.read_text())["summaries"]
    u, stale, seen = s["updates"], s["staleness_ms"], s["latency_ms"]
    assert u["missed"] == 0 and stale["samples"] == u["scheduled"] == u["applied"]
    assert seen["samples"] == u["delivered"] < stale["samples"] / 3
    assert stale["p99"] >= 500
    assert stale["p50"] > seen["p50"]
    per_second = s["staleness_per_second"]
    assert [p["second"] for p in per_second] == [0, 1, 2, 3]
    assert sum(p["samples"] for p in per_second) == stale["samples"]

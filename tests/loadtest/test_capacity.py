"""python -m statecast.loadtest.capacity against a real `statecast serve` process."""

from __future__ import annotations

import subprocess
import sys


def test_capacity_run_reports_every_room_and_spectator_served() -> None:
    """A tiny run past --max-rooms, one room at a time: idle rooms make space for new ones."""
    result = subprocess.run(
        [sys.executable, "-m", "statecast.loadtest.capacity", "--spectators", "3", "--rooms", "4",
         "--concurrency", "1", "--serve-arg=--max-rooms=2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )  # fmt: skip
    assert "rooms: 5 of 5 small rooms created" in result.stdout
    assert 'room small-0 read back: HTTP 200 {"epoch"' in result.stdout
    assert "spectators: 3 joined one room, 0 refused" in result.stdout
    assert "one diff reached all 3 spectators" in result.stdout

"""The fan-out micro-benchmark: the feed's loop against bare transport writes."""

from __future__ import annotations

import json
import subprocess
import sys


def test_fanout_cost_times_the_feed_against_bare_writes() -> None:
    """Smoke test of a benchmark: it runs on real connections and reports both loops (the
    figures themselves are the benchmark's to report, not a test's to check)."""
    run = subprocess.run(
        [sys.executable, "-m", "statecast.loadtest.fanout_cost", "--connections", "20",
         "--passes", "3", "--rounds", "1"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["connections"] == 20
    assert result["ns_per_write"]["raw"] > 0 and result["ns_per_write"]["feed"] > 0
    assert set(result["ns_per_delivered"]) == {"publish", "views"}
    assert result["views_over_publish"] > 0

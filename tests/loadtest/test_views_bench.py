"""``statecast bench-views``: spectators on views against spectators of the whole room."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_bench_views_runs_each_mode_and_views_cost_a_fraction_of_the_bytes(
    tmp_path: Path,
) -> None:
    """A short real run (its own server, real connections): every mode reports, and a
    spectator of one zone in ten receives far fewer bytes than one of the whole room."""
    out = tmp_path / "views.json"
    run = subprocess.run(
        [sys.executable, "-m", "statecast.loadtest.views", "--spectators", "20", "--sample",
         "5", "--agents", "2", "--rate", "10", "--duration", "1.5", "--json", str(out)],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    rows = {row["mode"]: row for row in json.loads(out.read_text())}
    assert set(rows) == {"whole", "views", "distinct"}
    assert rows["distinct"]["distinct_views"] == 20 and rows["views"]["distinct_views"] == 10
    for row in rows.values():
        assert row["applied"] > 0 and row["delivered"] > 0
    whole = rows["whole"]["bytes_per_spectator"]
    assert rows["views"]["bytes_per_spectator"] < whole / 3
    assert "views / whole over 1 round(s): bytes per spectator" in run.stdout


def test_bench_views_refuses_a_bad_flag_naming_it() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "statecast.loadtest.views", "--spectators", "-5"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 2 and "--spectators" in run.stderr

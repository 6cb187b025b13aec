"""The shape of an update (--changed, --value-bytes) and what the console explains."""

from __future__ import annotations

import json
from pathlib import Path

from tests.loadtest.test_commands import _run


def test_each_action_changes_as_many_entries_of_the_size_asked(tmp_path: Path) -> None:
    """--changed 3 --value-bytes 200: every DIFF carries three entries of 200 padding bytes
    each, for push and poll alike, and the counting still holds (the extra entries are not
    an agent's)."""
    path = tmp_path / "b.json"
    done = _run(
        "bench", "--modes", "poll,push", "--agents", "1", "--rate", "5", "--spectators", "1",
        "--changed", "3", "--value-bytes", "200", "--duration", "1", "--warmup", "0.3",
        "--no-live", "--json", str(path),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    for s in json.loads(path.read_text())["summaries"]:
        assert s["scenario"]["changed"] == 3 and s["scenario"]["value_bytes"] == 200
        u = s["updates"]
        assert u["missed"] == 0 and u["delivered"] + u["coalesced"] == u["applied"] * 2
        assert s["bytes"]["down_per_update_per_observer"] > 3 * 200
    assert "push S=1 K=3 B=200" in done.stdout


def test_help_and_console_explain_what_they_count() -> None:
    """--rate is per agent, agents observe too, and the console says what "1st p50" and
    staleness are."""
    help_text = _run("bench", "--help").stdout
    assert "actions per second of each agent, not of the room" in help_text
    assert "observers = agents + spectators" in help_text
    run = _run(
        "bench", "--modes", "push", "--agents", "1", "--spectators", "0", "--duration", "0.5",
        "--warmup", "0.2", "--no-live",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "1st p50: median over actions of the first observer" in run.stdout
    assert "observers are the spectators plus the agents" in run.stdout

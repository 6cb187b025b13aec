"""Results for other tools: --json - on stdout, --csv, --summary, the run's metadata, and
``statecast bench compare`` with the spread --repeat measured."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.loadtest.test_commands import _run

REPEATED = ["--modes", "push", "--agents", "1", "--rate", "5", "--spectators", "2"]
REPEATED += ["--duration", "1", "--warmup", "0.3", "--repeat", "2", "--no-live"]


@pytest.fixture(scope="module")
def repeated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two rounds of push, JSON to stdout, a CSV, and the one-line summary."""
    out = tmp_path_factory.mktemp("export")
    done = _run("bench", *REPEATED, "--json", "-", "--csv", str(out / "runs.csv"), "--summary")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    (out / "a.json").write_text(done.stdout)
    return {"done": done, "dir": out, "document": json.loads(done.stdout)}


def test_json_to_stdout_is_the_json_alone_and_the_summary_one_line(
    repeated: dict[str, Any],
) -> None:
    document, done = repeated["document"], repeated["done"]
    assert [s["scenario"]["round"] for s in document["summaries"]] == [1, 2]
    lines = [line for line in done.stderr.splitlines() if line.startswith("statecast bench:")]
    assert len(lines) == 1
    assert "push S=2 #1 stale " in lines[0] and lines[0].endswith("2/2 valid, 0 threshold failures")
    assert "Cost per update" not in done.stderr + done.stdout  # no tables with --summary


def test_csv_has_a_row_per_run_with_its_figures(repeated: dict[str, Any]) -> None:
    rows = list(csv.DictReader(io.StringIO((repeated["dir"] / "runs.csv").read_text())))
    summaries = repeated["document"]["summaries"]
    assert [r["run"] for r in rows] == ["push S=2 #1", "push S=2 #2"]
    for row, s in zip(rows, summaries, strict=True):
        assert float(row["stale_p99_ms"]) == pytest.approx(s["staleness_ms"]["p99"], rel=1e-5)
        assert int(row["updates_applied"]) == s["updates"]["applied"]
        assert row["compression"] == "none" and row["valid"] == "yes"


def test_the_json_says_what_it_was_measured_on_and_with(
    repeated: dict[str, Any], bench_output: dict[str, Any]
) -> None:
    document = repeated["document"]
    # The command as typed, even when bench runs inside another program (here: pytest).
    assert bench_output["command"].startswith("statecast bench --modes poll,push,floor,raw")
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert document["git_commit"].removesuffix("+dirty") == commit
    assert document["cpu_model"] and document["cores"] >= 1
    assert document["python"].startswith("CPython 3.")
    assert document["statecast_version"] != "unknown"
    assert "--store" in document["server_flags"]
    assert document["command"].startswith("statecast bench --modes push")


def test_compare_prints_each_ratio_with_the_spread_of_the_rounds(
    repeated: dict[str, Any], bench_output: dict[str, Any], tmp_path: Path
) -> None:
    a = repeated["dir"] / "a.json"
    done = _run("bench", "compare", str(a), str(a))
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if "stale_p99_ms" in line]
    assert len(rows) == 1 and "B/A   1.000x" in rows[0]
    values = sorted(s["staleness_ms"]["p99"] for s in repeated["document"]["summaries"])
    spread = (values[1] - values[0]) / ((values[0] + values[1]) / 2)
    assert f"spread {spread * 100:.0f}% (within noise)" in rows[0]
    # Against a file of one round (the push S=4 there is another scenario): nothing in
    # common, said; a one-round file against itself: no spread to offer, said.
    one = tmp_path / "one.json"
    one.write_text(json.dumps({"summaries": bench_output["summaries"]}))
    apart = _run("bench", "compare", str(a), str(one))
    assert "no scenario in common" in apart.stdout
    single = _run("bench", "compare", str(one), str(one))
    assert re.search(r"stale_p99_ms .* spread unknown: run each with --repeat N", single.stdout)


def test_compare_refuses_what_is_not_a_result_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    done = _run("bench", "compare", str(bad), str(bad))
    assert done.returncode == 2 and "no 'summaries'" in done.stderr
    assert _run("bench", "compare", str(bad)).returncode == 2
    assert "statecast bench compare A.json B.json" in _run("bench", "oops").stderr

"""The load harness end to end: a tiny sweep of every mode through ``statecast bench``."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from statecast.loadtest.plots import plot
from statecast.loadtest.report import collapse
from statecast.server.cli import main


def test_every_mode_produces_a_complete_result(bench_output: dict[str, Any]) -> None:
    """Each mode ran to the end: no failure, actions applied, latencies and bytes recorded."""
    assert bench_output["exit_code"] == 0
    summaries = bench_output["summaries"]
    assert [s["scenario"]["mode"] for s in summaries] == ["poll", "push", "floor", "raw"]
    for s in summaries:
        assert "failed" not in s, s
        assert s["sampled_observers"] == 3 and s["scenario"]["observers"] == 6
        assert [w["drained"] for w in bench_output["raw"][0]["workers"]] == [0, 3]
        assert s["errors"] == []
        assert s["updates"]["applied"] > 0
        assert 0 < s["latency_ms"]["samples"] < s["updates"]["delivered"]  # the sample only
        for key in ("p50", "p95", "p99", "max", "first_p50"):
            assert s["latency_ms"][key] is not None
        assert s["bytes"]["up"] > 0 and s["bytes"]["down"] > 0
        assert s["server"]["measured"] and s["server"]["rss_mb"] > 0
        assert s["requests_per_second"] > 0
        assert s["egress"]["gb_per_month"] > 0
        assert s["regime"]


def test_counts_are_consistent(bench_output: dict[str, Any]) -> None:
    """delivered + coalesced + missed is every applied action times every observer; none lost."""
    for s in bench_output["summaries"]:
        u = s["updates"]
        assert u["rejected"] == 0
        assert u["applied"] == u["sent"]
        assert u["missed"] == 0
        assert u["delivered"] + u["coalesced"] == u["applied"] * s["scenario"]["observers"]
        if s["scenario"]["mode"] != "poll":
            assert u["coalesced"] == 0  # push and the floor deliver every update


def test_poll_counts_its_requests(bench_output: dict[str, Any]) -> None:
    """Polling reports its GETs, and its 304s plus unchanged bodies never exceed them."""
    poll = bench_output["summaries"][0]
    polls = poll["polls"]
    assert polls["count"] > 0
    assert polls["not_modified"] + polls["unchanged"] <= polls["count"]
    assert polls["room_changes_between_polls"] == 2 * 5 / 5


def test_comparisons_and_report_are_written(bench_output: dict[str, Any]) -> None:
    """The comparison pairs push with poll and with the floor, and report.md is written."""
    comparison = bench_output["comparison"]
    assert len(comparison["push_vs_poll"]) == 1
    assert [f["floor"] for f in comparison["push_vs_floor"]] == ["floor", "raw"]
    report = Path(bench_output["dir"]) / "report" / "report.md"
    text = report.read_text()
    assert "## Latency and updates" in text and "## How it was measured" in text
    assert "matplotlib is not installed" in text


def test_skipped_plots_are_said_on_the_console(bench_output: dict[str, Any]) -> None:
    """Without matplotlib the console says why there are no plots, not only report.md."""
    assert "Plots were not drawn: matplotlib is not installed" in bench_output["console"]
    assert "report:" in bench_output["console"]


def test_plots_and_the_collapse_curve(bench_output: dict[str, Any], tmp_path: Path) -> None:
    """A sweep over S gives the collapse table and the headline plot first, one colour a mode."""
    runs = bench_output["summaries"]
    wider = [{**s, "scenario": {**s["scenario"], "spectators": 40}} for s in runs]
    curves = collapse([*runs, *wider])
    assert len(curves) == 1
    assert set(curves[0]["series"]) == {"poll P=5", "push", "floor", "raw"}
    assert [p["spectators"] for p in curves[0]["series"]["push"]] == [4, 40]
    files, note = plot([*runs, *wider], tmp_path)
    assert note is None
    assert Path(files[0]).name == "collapse.png" and Path(files[0]).stat().st_size > 10_000
    assert {"staleness-cdf-S4-rate5.png", "staleness-cdf-S40-rate5.png"} <= {
        Path(f).name for f in files
    }


def test_a_repeated_sweep_alternates_modes_and_takes_ratios_per_round(tmp_path: Path) -> None:
    """``--repeat 2``: push and raw run in turn, twice; each ratio is taken within a round,
    and the median of the rounds' ratios is reported beside their range."""
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        code = main(
            [
                "bench", "--modes", "push,raw", "--agents", "2", "--rate", "5",
                "--spectators", "2", "--duration", "1", "--warmup", "0.5", "--repeat", "2",
                "--json", str(tmp_path / "bench.json"), "--no-live",
            ]
        )  # fmt: skip
    assert code == 0
    document = json.loads((tmp_path / "bench.json").read_text())
    order = [(s["scenario"]["mode"], s["scenario"]["round"]) for s in document["summaries"]]
    assert order == [("push", 1), ("raw", 1), ("push", 2), ("raw", 2)]
    floors = document["comparison"]["push_vs_floor"]
    assert [f["scenario"]["round"] for f in floors] == [1, 2]
    for row in floors:
        push, raw = (
            s for s in document["summaries"] if s["scenario"]["round"] == row["scenario"]["round"]
        )
        assert row["bytes_push_over_floor"] == pytest.approx(
            push["bytes"]["per_update_per_observer"] / raw["bytes"]["per_update_per_observer"]
        )
    [rounds] = document["comparison"]["over_rounds"]
    assert rounds["against"] == "raw" and rounds["rounds"] == 2
    for name in ("bytes_push_over_floor", "cpu_push_over_floor"):
        # A ratio a round could not take (no CPU tick in so short a run) is left out.
        per_round = sorted(f[name] for f in floors if f[name] is not None)
        if not per_round:
            assert name not in rounds["ratios"]
            continue
        ratio = rounds["ratios"][name]
        assert (ratio["low"], ratio["high"]) == (per_round[0], per_round[-1])
        assert ratio["median"] == pytest.approx(sum(per_round) / len(per_round))
    assert "bytes_push_over_floor" in rounds["ratios"]
    assert "median of 2 rounds" in console.getvalue()
    assert "push S=2 #1" in console.getvalue()
    assert "E=0 #1: push/raw" in console.getvalue() and "E=0 #2: push/raw" in console.getvalue()

"""The load harness end to end: a tiny sweep of every mode through ``statecast bench``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from statecast.server.cli import main


@pytest.fixture(scope="module")
def bench_output(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One tiny run of poll, push and floor (a few seconds each), shared by the checks below."""
    out = tmp_path_factory.mktemp("bench")
    code = main(
        [
            "bench",
            "--modes", "poll,push,floor",
            "--agents", "2",
            "--rate", "5",
            "--spectators", "1",
            "--poll-hz", "5",
            "--duration", "1.5",
            "--warmup", "0.5",
            "--json", str(out / "bench.json"),
            "--report", str(out / "report"),
            "--no-live",
        ]
    )  # fmt: skip
    document: dict[str, Any] = json.loads((out / "bench.json").read_text())
    document["exit_code"] = code
    document["dir"] = str(out)
    return document


def test_every_mode_produces_a_complete_result(bench_output: dict[str, Any]) -> None:
    """Each mode ran to the end: no failure, actions applied, latencies and bytes recorded."""
    assert bench_output["exit_code"] == 0
    summaries = bench_output["summaries"]
    assert [s["scenario"]["mode"] for s in summaries] == ["poll", "push", "floor"]
    for s in summaries:
        assert "failed" not in s, s
        assert s["errors"] == []
        assert s["updates"]["applied"] > 0
        assert s["latency_ms"]["samples"] == s["updates"]["delivered"]
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
    assert len(comparison["push_vs_floor"]) == 1
    report = Path(bench_output["dir"]) / "report" / "report.md"
    text = report.read_text()
    assert "## Latency and updates" in text and "## How it was measured" in text
    assert "![" in text or "matplotlib is not installed" in text  # plots, or why there are none

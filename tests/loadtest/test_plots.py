"""The report's plots: staleness drawn first, S = 0 kept, no series under another, plain ticks.

The curves come from a real tiny sweep (tests/loadtest/test_smoke.py's run), widened to
three values of S starting at 0; the checks read the matplotlib figure the report saves.
"""

from __future__ import annotations

import re
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from statecast.loadtest.plots import _plain, draw_collapse
from statecast.loadtest.report import collapse


def _curve(bench_output: dict[str, Any]) -> dict[str, Any]:
    runs = bench_output["summaries"]
    wider = [{**s, "scenario": {**s["scenario"], "spectators": n}} for n in (0, 40) for s in runs]
    [curve] = collapse([*runs, *wider])
    return curve


def test_the_collapse_plot_draws_staleness_first_and_keeps_s_zero(
    bench_output: dict[str, Any],
) -> None:
    curve = _curve(bench_output)
    fig = draw_collapse(curve)
    try:
        fig.canvas.draw()
        stale = fig.axes[0]
        assert "Staleness" in stale.get_title()
        assert "Secondary" in fig.axes[-1].get_title()
        push = next(line for line in stale.get_lines() if line.get_label() == "push p99")
        assert list(push.get_xdata()) == [0, 4, 40]
        assert list(push.get_ydata()) == [p["stale_p99_ms"] for p in curve["series"]["push"]]
        # S = 0 lands inside the axes, left of S = 4 (a log axis would drop it).
        x0, x4 = stale.transData.transform([(0, 1), (4, 1)])[:, 0]
        left, right = stale.get_window_extent().intervalx
        assert left <= x0 < x4 <= right
        # Every series has its own look: push is not drawn the way the floors are.
        looks = {
            line.get_label(): (line.get_marker(), line.get_linestyle(), line.get_markerfacecolor())
            for line in stale.get_lines()
            if line.get_label().endswith(" p99")
        }
        assert len(set(looks.values())) == len(looks) == 4
        for ax in fig.axes:
            for label in [*ax.get_xticklabels(), *ax.get_yticklabels()]:
                text = label.get_text()
                assert text == "" or re.fullmatch(r"-?[\d,]+(\.\d+)?", text), text
    finally:
        plt.close(fig)


def test_tick_labels_are_plain_numbers() -> None:
    assert [_plain(v) for v in (0, 3, 1000, 0.5, 2.5, 10000)] == [
        "0", "3", "1,000", "0.5", "2.5", "10,000",
    ]  # fmt: skip

"""The report's PNG plots (matplotlib, the optional ``plot`` extra).

Staleness is what they draw first: for every update and observer, how long until the
observer's view included it. The latency of the updates an observer happened to be
shown is a secondary panel: polling looks fast there because it hides what it skips.

Drawing rules: S = 0 stays on the collapse plot (a symlog axis, linear below 1), no
series hides another (each mode has its own marker and line style, the floors hollow and
dashed under push), and ticks read as plain numbers ("3", "1,000").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from statecast.loadtest.report import MODE_COLOURS, _label, collapse

MODE_MARKERS: Final = {"poll": "o", "push": "s", "floor": "^", "raw": "D"}
MODE_LINES: Final = {"poll": "-", "push": "-", "floor": "--", "raw": "-."}
#: Push on top: the floors it is compared with often sit on the same values.
MODE_Z: Final = {"poll": 3, "push": 4, "floor": 2, "raw": 2}
HOLLOW: Final = frozenset({"floor", "raw"})


def _plain(value: float, _position: int | None = None) -> str:
    """A tick label as a number is written: 3, 0.5, 1,000 (never 3x10^0)."""
    if value == 0:
        return "0"
    if abs(value) >= 1:
        return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"
    return f"{value:.3g}"


def _plain_ticks(ax: Any, *, x: bool = True, y: bool = True) -> None:
    from matplotlib.ticker import FuncFormatter, NullFormatter

    for on, axis in ((x, ax.xaxis), (y, ax.yaxis)):
        if on:
            axis.set_major_formatter(FuncFormatter(_plain))
            axis.set_minor_formatter(NullFormatter())


def _style(mode: str, *, secondary: bool = False) -> dict[str, Any]:
    hollow = mode in HOLLOW or secondary
    return {
        "color": MODE_COLOURS[mode],
        "marker": MODE_MARKERS[mode],
        "linestyle": ":" if secondary else MODE_LINES[mode],
        "markersize": 7 if mode in HOLLOW else 5,
        "markerfacecolor": "none" if hollow else MODE_COLOURS[mode],
        "zorder": MODE_Z[mode],
        "linewidth": 1.0 if secondary else 1.6,
    }


def plot(summaries: Sequence[dict[str, Any]], directory: Path) -> tuple[list[str], str | None]:
    """PNG plots; returns their paths, or a note saying why there are none."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], (
            "Plots were not drawn: matplotlib is not installed "
            "(`pip install 'statecast[plot]'`, or `.venv/bin/pip install matplotlib`)."
        )
    done = [s for s in summaries if "failed" not in s]
    files: list[str] = []
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for s in done:
        sc = s["scenario"]
        groups.setdefault((sc["agents"], sc["rate"], sc["spectators"]), []).append(s)
    for (agents, rate, spectators), members in groups.items():
        files.append(plot_cdf(members, agents, rate, spectators, directory))
        files.append(plot_over_time(members, agents, rate, spectators, directory))
    for field, sub, title, ylabel, stem in (
        ("bytes", "per_update_per_observer", "Bytes per applied action per observer", "B", "bytes"),
        ("server", "cpu_per_1k_delivered", "Server CPU per 1,000 delivered updates", "s", "cpu"),
    ):
        labels = [_label(s["scenario"]) for s in done]
        values = [s[field][sub] or 0.0 for s in done]
        colors = [MODE_COLOURS[s["scenario"]["mode"]] for s in done]
        fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(done) + 2), 4))
        bars = ax.bar(range(len(done)), values, color=colors)
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
        positive = [v for v in values if v > 0]
        if positive and max(positive) > 20 * min(positive):
            ax.set_yscale("log")
            title += " (log scale)"
        _plain_ticks(ax, x=False)
        ax.set_xticks(range(len(done)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, axis="y", alpha=0.3)
        fig.tight_layout()
        name = directory / f"{stem}-per-update.png"
        fig.savefig(name, dpi=110)
        plt.close(fig)
        files.append(str(name))
    for curve in collapse(summaries)[:1]:
        files.insert(0, plot_collapse(curve, directory / "collapse.png"))
    return files, None


def plot_cdf(
    members: Sequence[dict[str, Any]], agents: int, rate: float, spectators: int, directory: Path
) -> str:
    """Staleness CDF of each run of one scenario (every update x every sampled observer)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for s in members:
        cdf = s.get("staleness_cdf_ms") or []
        if not cdf:
            continue
        mode = s["scenario"]["mode"]
        xs, ys = zip(*cdf, strict=True)
        style = _style(mode)
        ax.step(
            xs, ys, where="post", label=_label(s["scenario"]), color=style["color"],
            linestyle=style["linestyle"], linewidth=style["linewidth"], zorder=style["zorder"],
        )  # fmt: skip
    ax.set_xscale("log")
    _plain_ticks(ax)
    ax.set_xlabel("staleness: from the update's due time until the view includes it (ms, log)")
    ax.set_ylabel("fraction of updates x observers")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=0.1)  # below 0.1 ms: the histogram's first buckets, nothing to read
    ax.set_title(f"Staleness CDF: {agents} agents x {rate:g}/s, {spectators} spectators")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    name = directory / f"staleness-cdf-S{spectators}-rate{rate:g}.png"
    fig.tight_layout()
    fig.savefig(name, dpi=110)
    plt.close(fig)
    return str(name)


def plot_over_time(
    members: Sequence[dict[str, Any]], agents: int, rate: float, spectators: int, directory: Path
) -> str:
    """Staleness p50 and p99 per second of the window: a stall in the middle shows here."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for s in members:
        points = s.get("staleness_per_second") or []
        if not points:
            continue
        mode = s["scenario"]["mode"]
        xs = [p["second"] for p in points]
        for key, suffix, secondary in (("p99_ms", " p99", False), ("p50_ms", " p50", True)):
            ys = [p[key] if p[key] is not None else math.nan for p in points]
            ax.plot(
                xs, ys, label=_label(s["scenario"]) + suffix, **_style(mode, secondary=secondary)
            )
    ax.set_yscale("log")
    _plain_ticks(ax)
    ax.set_xlabel("second of the measured window (by the update's due time)")
    ax.set_ylabel("staleness (ms, log scale)")
    ax.set_title(f"Staleness over time: {agents} agents x {rate:g}/s, {spectators} spectators")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    name = directory / f"staleness-over-time-S{spectators}-rate{rate:g}.png"
    fig.tight_layout()
    fig.savefig(name, dpi=110)
    plt.close(fig)
    return str(name)


def plot_collapse(curve: dict[str, Any], path: Path) -> str:
    """The headline plot, written to ``path``."""
    import matplotlib.pyplot as plt

    fig = draw_collapse(curve)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def draw_collapse(curve: dict[str, Any]) -> Any:
    """The headline: staleness, updates shown, server CPU and (secondary) the latency of
    the updates seen, against S, poll against push against the floors (a Figure)."""
    import matplotlib.pyplot as plt

    fig, (stale, seen, cpu, lat) = plt.subplots(1, 4, figsize=(19, 4.6))
    panels = (
        (stale, "stale_p99_ms", " p99", 1.0, False),
        (stale, "stale_p50_ms", " p50", 1.0, True),
        (seen, "delivered_fraction", "", 100.0, False),
        (cpu, "server_cpu", "", 100.0, False),
        (lat, "p99_ms", " p99", 1.0, False),
        (lat, "p50_ms", " p50", 1.0, True),
    )
    for name, points in curve["series"].items():
        mode = points[0]["mode"]
        xs = [p["spectators"] for p in points]
        for ax, key, suffix, scale, secondary in panels:
            # A point with nothing to show (no update seen at all) is left out, not drawn at 0.
            ys = [p.get(key) * scale if p.get(key) is not None else math.nan for p in points]
            ax.plot(xs, ys, label=name + suffix, **_style(mode, secondary=secondary))
            bad = [(x, y) for x, y, p in zip(xs, ys, points, strict=True) if not p["valid"]]
            if bad:  # a saturated generator: circled, not to be trusted
                bx, by = zip(*bad, strict=True)
                ax.plot(bx, by, "o", markersize=12, markerfacecolor="none", color="red", zorder=5)
    for name, at in curve["poll_breaks_at"].items():
        if at is None:
            continue
        for ax in (stale, seen, cpu, lat):
            ax.axvline(at, color=MODE_COLOURS["poll"], linestyle=":", alpha=0.9)
        seen.annotate(
            f"{name}: stops\nkeeping up", (at, 0.5), xycoords=("data", "axes fraction"),
            xytext=(-6, 0), textcoords="offset points", ha="right", fontsize=8,
            color=MODE_COLOURS["poll"],
        )  # fmt: skip
    top = max(p["spectators"] for ps in curve["series"].values() for p in ps)
    for ax in (stale, seen, cpu, lat):
        # symlog: logarithmic from 1 up, linear below, so S = 0 is drawn and not dropped.
        ax.set_xscale("symlog", linthresh=1, linscale=0.5)
        ax.set_xlim(-0.2, top * 1.6)
        ax.set_xticks([0, *(10**k for k in range(1, max(1, math.ceil(math.log10(top))) + 1))])
        ax.set_xlabel("spectators S (log scale; 0 drawn at the left)")
        ax.grid(True, which="both", alpha=0.3)
    for ax in (stale, cpu, lat):
        ax.set_yscale("log")
    for ax in (stale, seen, cpu, lat):
        _plain_ticks(ax)
    stale.set_ylabel("ms (log scale)")
    stale.set_title("Staleness: due until each observer's view has it")
    seen.set_ylabel("% of updates")
    seen.set_ylim(0, 105)
    seen.set_title("Updates each observer was shown")
    cpu.set_ylabel("% of one core (log scale)")
    cpu.set_title("Server CPU")
    lat.set_ylabel("ms (log scale)")
    lat.set_title("Secondary: latency of the updates shown")
    stale.legend(fontsize=7, ncol=2)
    seen.legend(fontsize=7, loc="lower left")
    cpu.legend(fontsize=7)
    fig.suptitle(
        f"One room, {curve['agents']} agents x {curve['rate']:g} actions/s, S spectators; "
        "p50 dotted and hollow; circled red: a generator was saturated",
        fontsize=9,
    )
    fig.tight_layout()
    return fig

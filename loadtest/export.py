"""Results for other tools: a CSV row per run, a one-line summary, and ``bench compare``.

``statecast bench compare A.json B.json`` pairs the runs of two result files by scenario
and prints, figure by figure, A's value, B's and B/A. With ``--repeat`` a file holds
several rounds of each scenario: its figure is then their median and its spread
(high - low over the median) is the noise that run measured; a ratio within the larger
of the two spreads is marked "within noise". A file of one round has no spread to offer,
and the line says so.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from statecast.loadtest.report import _label

#: (column, how to read it from a summary); None where the run has no such figure.
FIGURES: Final[tuple[tuple[str, Callable[[dict[str, Any]], Any]], ...]] = (
    ("stale_p50_ms", lambda s: s["staleness_ms"]["p50"]),
    ("stale_p99_ms", lambda s: s["staleness_ms"]["p99"]),
    ("seen_p50_ms", lambda s: s["latency_ms"]["p50"]),
    ("seen_p99_ms", lambda s: s["latency_ms"]["p99"]),
    ("delivered_fraction", lambda s: s["updates"]["delivered_fraction"]),
    ("bytes_per_update_per_observer", lambda s: s["bytes"]["per_update_per_observer"]),
    ("server_cpu_per_second", lambda s: s["server"]["cpu_per_second"]),
    ("server_cpu_s_per_1k_delivered", lambda s: s["server"]["cpu_per_1k_delivered"]),
)
SCENARIO: Final = ("mode", "agents", "rate", "spectators", "poll_hz", "entities", "round")


def _figure(read: Callable[[dict[str, Any]], Any], s: dict[str, Any]) -> float | None:
    try:
        value = read(s)
    except (KeyError, TypeError):
        return None
    return float(value) if isinstance(value, int | float) else None


def csv_text(summaries: Sequence[dict[str, Any]]) -> str:
    """One row per run: its scenario, every figure of FIGURES, and how it was measured."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    extra = ("updates_applied", "cpu_source", "compression", "valid", "failed")
    writer.writerow(["run", *SCENARIO, *(name for name, _ in FIGURES), *extra])
    for s in summaries:
        sc = s["scenario"]
        row: list[Any] = [_label(sc), *(sc.get(k, "") for k in SCENARIO)]
        if "failed" in s:
            writer.writerow([*row, *([""] * (len(FIGURES) + 4)), s["failed"]])
            continue
        row += ["" if (v := _figure(read, s)) is None else f"{v:.6g}" for _, read in FIGURES]
        row += [
            s["updates"]["applied"],
            s["server"].get("cpu_source") or "",
            s.get("compression", {}).get("label", ""),
            "yes" if s["valid"] else "no",
            "",
        ]
        writer.writerow(row)
    return out.getvalue()


def summary_line(summaries: Sequence[dict[str, Any]], failures: Sequence[str]) -> str:
    """The whole sweep in one line: each run's staleness p50/p99 and server CPU per 1k
    deliveries, then how many runs were valid and thresholds failed."""

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.3g}ms"

    parts = []
    for s in summaries:
        if "failed" in s:
            parts.append(f"{_label(s['scenario'])} failed")
            continue
        st, cpu = s["staleness_ms"], s["server"]["cpu_per_1k_delivered"]
        parts.append(
            f"{_label(s['scenario'])} stale {ms(st['p50'])}/{ms(st['p99'])} "
            f"cpu/1k {'-' if cpu is None else f'{cpu:.3g}s'}" + ("" if s["valid"] else " INVALID")
        )
    valid = sum(1 for s in summaries if "failed" not in s and s["valid"])
    verdict = f"{valid}/{len(summaries)} valid, {len(failures)} threshold failures"
    return "statecast bench: " + "; ".join(parts) + f" -- {verdict}"


# --- compare ---------------------------------------------------------------------------------


def _scenario_key(sc: dict[str, Any]) -> str:
    return _label({**sc, "round": 0})


def _by_scenario(document: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for s in document.get("summaries", []):
        if "failed" not in s:
            groups.setdefault(_scenario_key(s["scenario"]), []).append(s)
    return groups


def _median_spread(runs: Sequence[dict[str, Any]], read: Callable[..., Any]) -> tuple[Any, Any]:
    values = [v for s in runs if (v := _figure(read, s)) is not None]
    if not values:
        return None, None
    median = statistics.median(values)
    if len(values) < 2 or not median:
        return median, None
    return median, (max(values) - min(values)) / abs(median)


def load(path: str) -> dict[str, Any]:
    """A result file written by ``--json``; a clear error when it is not one."""
    try:
        document = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror or exc}") from None
    except ValueError:
        raise ValueError(f"{path}: not JSON (write one with statecast bench --json FILE)") from None
    if not isinstance(document, dict) or "summaries" not in document:
        raise ValueError(f"{path}: no 'summaries' (write one with statecast bench --json FILE)")
    return document


def compare_files(a_path: str, b_path: str) -> list[str]:
    """Lines comparing B with A, scenario by scenario and figure by figure."""
    a, b = load(a_path), load(b_path)
    groups_a, groups_b = _by_scenario(a), _by_scenario(b)
    common = [k for k in groups_a if k in groups_b]
    out = [f"A: {a_path} ({a.get('started', '?')}: {a.get('command', '?')})"]
    out.append(f"B: {b_path} ({b.get('started', '?')}: {b.get('command', '?')})")
    if not common:
        out.append("no scenario in common: compare files of the same sweep (modes, S, rates)")
        return out
    for key in common:
        runs_a, runs_b = groups_a[key], groups_b[key]
        out.append(f"{key} (A: {len(runs_a)} round(s), B: {len(runs_b)})")
        for name, read in FIGURES:
            va, sa = _median_spread(runs_a, read)
            vb, sb = _median_spread(runs_b, read)
            if va is None or vb is None:
                continue
            ratio = f"{vb / va:.3f}x" if va else "-"
            spreads = [x for x in (sa, sb) if x is not None]
            if not spreads:
                noise = "spread unknown: run each with --repeat N"
            else:
                bar = max(spreads)
                inside = va and abs(vb / va - 1) <= bar
                noise = f"spread {bar * 100:.0f}%" + (" (within noise)" if inside else "")
            out.append(f"  {name:<31} A {va:>10.4g}  B {vb:>10.4g}  B/A {ratio:>8}  {noise}")
    left = sorted(set(groups_a) ^ set(groups_b))
    if left:
        out.append(f"only in one file: {', '.join(left)}")
    return out

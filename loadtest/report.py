"""From raw measurements to figures: the summary of each run, the comparisons, and the outputs.

Outputs: a table in the terminal (rich), a JSON file with every figure and the
latency histograms, and a Markdown report with PNG plots (matplotlib, the
optional ``plot`` extra; the report says so when it is missing).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.table import Table

from statecast.loadtest.measure import TICK_ERROR_BAR, Histogram
from statecast.loadtest.scenario import Timeline

MONTH_SECONDS: Final = 30 * 86400
SATURATED_CPU: Final = 0.85  # of one core
# p99 of the loop lag: past this a generator's timestamps are off by more than it measures.
# (A generator descheduled on a shared machine lags 10-30 ms at p99 without being busy.)
SATURATED_LAG_US: Final = 50_000
LAGGING_CPU: Final = 0.5  # lagging past SATURATED_LAG_US with this much of a core busy
BUSY_POLLS: Final = 0.8
QUIET_POLLS: Final = 0.2
PUSH_P99_BAR: Final = 10.0
REFERENCE: Final = (8, 5.0, 12, 5.0)  # agents, rate, spectators, poll Hz: the 100 rps case
FLAT: Final = 0.10  # bytes per update "stay where they were": within 10%
KEEPS_UP_SERVED: Final = 0.9  # polling keeps up while it serves this much of what is offered
KEEPS_UP_PERIODS: Final = 2.0  # ... and its p99 stays within this many poll periods
MODE_COLOURS: Final = {
    "poll": "tab:orange",
    "push": "tab:blue",
    "floor": "tab:gray",
    "raw": "tab:green",
}
MODE_ORDER: Final = ("poll", "push", "floor", "raw")


def _ms(us: float | None) -> float | None:
    return None if us is None else us / 1000


def _div(a: float, b: float) -> float | None:
    return a / b if b else None


def summarize(raw: dict[str, Any], price_per_gb: float) -> dict[str, Any]:
    """Every figure of one run, derived from what the target, generators and harness measured."""
    sc = raw["scenario"]
    if "failed" in raw:
        return {"scenario": sc, "failed": raw["failed"], "warnings": [raw["failed"]]}
    workers = raw["workers"]
    seconds = raw["window_seconds"]
    observers = sc["observers"]
    latency = Histogram.merged(Histogram.from_json(w["latency"]) for w in workers)
    staleness = Histogram.merged(
        Histogram.from_json(w["staleness"]) for w in workers if "staleness" in w
    )
    by_second: dict[int, Histogram] = {}
    for w in workers:
        for k, h in w.get("staleness_by_second", {}).items():
            by_second.setdefault(int(k), Histogram()).merge(Histogram.from_json(h))
    first: dict[tuple[int, int], int] = {}
    for w in workers:
        for a, n, lat in w["first"]:
            key = (a, n)
            if key not in first or lat < first[key]:
                first[key] = lat
    first_hist = Histogram()
    for lat in first.values():
        first_hist.add(lat)
    counters: dict[str, int] = {}
    for w in workers:
        for k, v in w["window"].get("counters", {}).items():
            counters[k] = counters.get(k, 0) + v
    agents = {k: sum(w["agents"][k] for w in workers) for k in ("sent", "applied", "rejected")}
    lateness = Histogram.merged(Histogram.from_json(w["agents"]["lateness"]) for w in workers)
    timeline = Timeline.from_json(raw["timeline"])
    scheduled = sum(hi - lo for lo, hi in (timeline.window(a) for a in range(sc["agents"])))
    delivered = sum(w["delivered"] for w in workers)
    coalesced = sum(w["coalesced"] for w in workers)
    missed = sum(w["missed"] for w in workers)
    applied = agents["applied"]
    up, down = counters.get("up", 0), counters.get("down", 0)
    server = raw.get("server")
    server_cpu = server["cpu"] if server else None
    polls = counters.get("http_get", 0)
    wasted = counters.get("http_304", 0) + counters.get("unchanged", 0)
    requests = polls + counters.get("http_post", 0) + counters.get("frames_up", 0)
    gen = []
    for w in workers:
        lag = Histogram.from_json(w["loop_lag"])
        win = w["window"]
        gen.append(
            {
                "observers": w["observers"],
                "cpu": _div(win.get("cpu", 0.0), win.get("wall", 0.0)),
                "loop_lag_p99_ms": _ms(lag.percentile(99)),
                "loop_lag_max_ms": _ms(lag.max),
            }
        )
    negotiated: dict[str, int] = {}
    for w in workers:
        for name, n in w.get("compression", {}).items():
            negotiated[name] = negotiated.get(name, 0) + n
    gen_cpu = sum(w["window"].get("cpu", 0.0) for w in workers)
    other = raw["machine"]["busy"] - (server_cpu or 0.0) - gen_cpu - raw["machine"]["harness_cpu"]
    egress_month_gb = down / seconds * MONTH_SECONDS / 1e9 if seconds else 0.0
    s: dict[str, Any] = {
        "scenario": sc,
        "window_seconds": seconds,
        "staleness_ms": {
            "p50": _ms(staleness.percentile(50)),
            "p95": _ms(staleness.percentile(95)),
            "p99": _ms(staleness.percentile(99)),
            "max": _ms(staleness.max) if staleness.count else None,
            "samples": staleness.count,
        },
        "latency_ms": {
            "p50": _ms(latency.percentile(50)),
            "p95": _ms(latency.percentile(95)),
            "p99": _ms(latency.percentile(99)),
            "max": _ms(latency.max) if latency.count else None,
            "first_p50": _ms(first_hist.percentile(50)),
            "samples": latency.count,
        },
        "updates": {
            "sent": agents["sent"],
            "applied": applied,
            "rejected": agents["rejected"],
            "expected": applied * observers,
            # Every observer times every action due in the window, applied in time or not:
            # what delivered + coalesced + missed add up to.
            "scheduled": scheduled * observers,
            "delivered": delivered,
            "coalesced": coalesced,
            "missed": missed,
            "delivered_fraction": _div(delivered, scheduled * observers),
        },
        "bytes": {
            "up": up,
            "down": down,
            "per_update_per_observer": _div(up + down, applied * observers),
            "down_per_update_per_observer": _div(down, applied * observers),
            "up_per_update_per_observer": _div(up, applied * observers),
            "per_delivered": _div(up + down, delivered),
        },
        "server": {
            "measured": server is not None,
            "cpu_seconds": server_cpu,
            "cpu_per_second": _div(server_cpu, seconds) if server_cpu is not None else None,
            "cpu_per_1k_delivered": _div(server_cpu * 1000, delivered)
            if server_cpu is not None
            else None,
            # "schedstat" (ns, exact) or "ticks" (10 ms at 100 Hz), and the ticks' error bound
            "cpu_source": server.get("cpu_source", "ticks") if server else None,
            "cpu_error": server.get("cpu_error") if server else None,
            "rss_mb": server["rss"] / 2**20 if server else None,
            "peak_rss_mb": server["peak_rss"] / 2**20 if server else None,
        },
        "compression": {
            "negotiated": negotiated,
            "label": compression_label(negotiated),
            "server_flags": raw.get("target", {}).get("flags", []),
        },
        "requests_per_second": _div(requests, seconds),
        "polls": {
            "count": polls,
            "not_modified": counters.get("http_304", 0),
            "unchanged": counters.get("unchanged", 0),
            "wasted_fraction": _div(wasted, polls),
            "changed_fraction": _div(polls - wasted, polls),
            "skipped": counters.get("polls_skipped", 0),
            "room_changes_between_polls": sc["agents"] * sc["rate"] / sc["poll_hz"]
            if sc["mode"] == "poll" and sc["poll_hz"]
            else None,
        },
        "generators": gen,
        "generator_cpu_per_second": _div(gen_cpu, seconds),
        "agent_lateness_p99_ms": _ms(lateness.percentile(99)),
        "other_cpu_per_second": _div(max(0.0, other), seconds),
        "egress": {
            "gb_per_month": egress_month_gb,
            "price_per_gb": price_per_gb,
            "cost_per_month": egress_month_gb * price_per_gb,
        },
        "staleness_per_second": [
            {
                "second": k,
                "p50_ms": _ms(h.percentile(50)),
                "p99_ms": _ms(h.percentile(99)),
                "max_ms": _ms(h.max),
                "samples": h.count,
            }
            for k, h in sorted(by_second.items())
        ],
        "staleness_cdf_ms": [(v / 1000, f) for v, f in staleness.cdf()],
        "latency_cdf_ms": [(v / 1000, f) for v, f in latency.cdf()],
        "errors": [e for w in workers for e in w["errors"]],
    }
    offered = sc["agents"] * sc["rate"]
    served = applied / seconds if seconds else None
    if sc["mode"] == "poll":
        offered += observers * sc["poll_hz"]
        served = _div(polls + counters.get("http_post", 0), seconds)
    s["offered_rps"] = offered
    s["served_rps"] = served
    s["room"] = raw.get("room")
    s["external"] = bool(raw.get("target", {}).get("external"))
    s["sampled_observers"] = sum(w.get("sampled", w["observers"]) for w in workers)
    idle = (server or {}).get("idle_rss_per_connection")
    s["server"]["idle_rss_per_connection_kib"] = idle / 1024 if idle is not None else None
    s["invalid"] = _invalid(s)
    s["valid"] = not s["invalid"]
    s["warnings"] = _warnings(s, raw)
    s["regime"] = regime(s)
    return s


def rooms_left(summaries: Sequence[dict[str, Any]]) -> str | None:
    """The rooms a run against a running server (--ws/--http) left there, and how to clean them.

    statecast has no way to delete a room over HTTP: an idle room is checkpointed and
    unloaded by the server after its --idle-unload seconds, and stays in a persistent store.
    """
    rooms = [s["room"] for s in summaries if s.get("external") and s.get("room")]
    if not rooms:
        return None
    prefix = rooms[0].rsplit("-", 1)[0]
    return (
        f"Rooms created on the target: {', '.join(rooms)} (all named {prefix}-N). statecast "
        f"has no room deletion over HTTP: the server unloads each once idle for its "
        f"--idle-unload seconds (300 by default); with --store memory they are gone then, "
        f"with a persistent store they stay in it until removed there."
    )


def coarse_cpu(s: dict[str, Any]) -> bool:
    """The server CPU came from ticks whose quantisation may exceed TICK_ERROR_BAR of it."""
    srv = s["server"]
    if not srv["measured"] or srv.get("cpu_source") != "ticks":
        return False
    error = srv.get("cpu_error")
    return error is None or error > TICK_ERROR_BAR


def _cpu(s: dict[str, Any], value: float | None, digits: int = 1) -> str:
    """A server CPU figure, ``~`` in front when ticks make it coarser than TICK_ERROR_BAR."""
    return _coarse(coarse_cpu(s), _f(value, digits))


def _coarse(coarse: bool, text: str) -> str:
    return f"~{text}" if coarse and text != "-" else text


def compression_label(negotiated: dict[str, int]) -> str:
    """What the WebSocket connections negotiated, in a word: ``permessage-deflate``,
    ``none``, ``deflate 3/5`` when only some did, ``-`` for a run without WebSockets."""
    total = sum(negotiated.values())
    if not total:
        return "-"
    deflated = negotiated.get("permessage-deflate", 0)
    if deflated == total:
        return "permessage-deflate"
    return "none" if not deflated else f"deflate {deflated}/{total}"


def _invalid(s: dict[str, Any]) -> list[str]:
    """Why the run's figures cannot be trusted: a generator that could not keep up.

    A generator is saturated when it is busy most of a core, or lags with half a core
    busy; one that lags while nearly idle was descheduled by a contended machine
    (a warning, :func:`_warnings`), not saturated.
    """
    out = []
    for i, g in enumerate(s["generators"]):
        cpu, lag = g["cpu"] or 0.0, (g["loop_lag_p99_ms"] or 0.0) * 1000
        if cpu > SATURATED_CPU or (lag > SATURATED_LAG_US and cpu > LAGGING_CPU):
            out.append(
                f"generator {i} was saturated ({cpu * 100:.0f}% of a core, loop lag "
                f"p99 {lag / 1000:.1f} ms): its latencies include its own queueing"
            )
    return out


def _warnings(s: dict[str, Any], raw: dict[str, Any]) -> list[str]:
    out = [f"INVALID: {why}" for why in s["invalid"]]
    for i, g in enumerate(s["generators"]):
        cpu, lag = g["cpu"] or 0.0, (g["loop_lag_p99_ms"] or 0.0) * 1000
        if lag > SATURATED_LAG_US and cpu <= LAGGING_CPU:
            out.append(
                f"generator {i} was descheduled (loop lag p99 {lag / 1000:.1f} ms at "
                f"{cpu * 100:.0f}% of a core): the machine was contended, and latencies "
                f"measured there include up to that much scheduling delay"
            )
    cpu = s["server"]["cpu_per_second"]
    if cpu is not None and cpu > SATURATED_CPU:
        out.append(f"the target was saturated ({cpu * 100:.0f}% of a core)")
    other = s["other_cpu_per_second"] or 0
    if other > 0.25:
        out.append(
            f"the machine was busy with other work ({other:.2f} cores on average outside this run)"
        )
    u = s["updates"]
    if u["rejected"]:
        out.append(f"{u['rejected']} actions were rejected")
    if u["missed"]:
        out.append(f"{u['missed']} window updates never reached their observer")
    if u["applied"] < u["sent"]:
        out.append(f"{u['sent'] - u['applied']} actions sent in the window were not acknowledged")
    if s["polls"]["skipped"]:
        out.append(f"{s['polls']['skipped']} poll slots were skipped (a poll outlasted its period)")
    if not s["server"]["measured"]:
        out.append("the target's CPU and memory were not measured (pass --server-pid)")
    elif coarse_cpu(s):
        error = s["server"]["cpu_error"]
        out.append(
            f"the target's CPU was read in clock ticks ({s['server']['cpu_seconds']:.3f} s, "
            + (f"error up to {error * 100:.0f}%" if error is not None else "below one tick")
            + "): its CPU figures are marked ~; a longer --duration makes them exact enough"
        )
    if s["errors"]:
        out.append(f"{len(s['errors'])} errors, first: {s['errors'][0]}")
    return out


def regime(s: dict[str, Any]) -> str:
    """Which regime a run is in, in words: where polling holds up and where it does not."""
    mode = s["scenario"]["mode"]
    u = s["updates"]
    if mode == "floor":
        return "the floor: one websockets.broadcast per frame, no room logic at all"
    if mode == "raw":
        return "the raw floor: one transport.write per connection per frame, nothing else"
    if mode == "push":
        return (
            "push: each applied action reaches every observer as one small DIFF; "
            "cost follows the changes, not the size of the state"
        )
    p = s["polls"]
    changed = p["changed_fraction"] or 0.0
    between = p["room_changes_between_polls"] or 0.0
    lost = (u["coalesced"] / u["expected"]) if u["expected"] else 0.0
    if changed >= BUSY_POLLS:
        return (
            f"busy room ({between:.1f} room changes between two polls): {changed * 100:.0f}% of "
            f"polls brought news, so polling wastes few requests here; it pays in latency (up "
            f"to a poll period) and in re-sending the whole state, and coalesced away "
            f"{lost * 100:.0f}% of the updates"
        )
    if changed <= QUIET_POLLS:
        return (
            f"quiet room ({between:.2f} room changes between two polls): "
            f"{(1 - changed) * 100:.0f}% of polls were wasted (304 or no change)"
        )
    return (
        f"mixed ({between:.1f} room changes between two polls): {changed * 100:.0f}% of polls "
        f"brought news, {lost * 100:.0f}% of updates coalesced away"
    )


# --- comparisons ---------------------------------------------------------------------------


def _key(sc: dict[str, Any], *, poll: bool = True, entities: bool = True) -> tuple[Any, ...]:
    return (
        sc.get("round", 0),
        sc["agents"],
        sc["rate"],
        sc["spectators"],
        sc["entities"] if entities else None,
        sc["poll_hz"] if poll else None,
    )


def _ratio(a: dict[str, Any], b: dict[str, Any], section: str, field: str) -> float | None:
    """``a``'s figure over ``b``'s (summaries' ``[section][field]``), None where ``b`` has none."""
    return _div(a[section][field] or 0, b[section][field] or 0)


def _round(sc: dict[str, Any]) -> str:
    """`` #k`` for round k of a repeated sweep, else nothing."""
    return f" #{sc['round']}" if sc.get("round") else ""


def _scenario(sc: dict[str, Any], *names: str) -> dict[str, Any]:
    """The fields of a scenario a comparison names, and its round."""
    return {**{k: sc[k] for k in names}, "round": sc.get("round", 0)}


def _find(
    summaries: Sequence[dict[str, Any]], mode: str, key: tuple[Any, ...], **which: bool
) -> dict[str, Any] | None:
    for s in summaries:
        sc = s["scenario"]
        if sc["mode"] == mode and "failed" not in s and _key(sc, **which) == key:
            return s
    return None


def compare(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Push against poll, push against the floor, and how each grows with the state."""
    pairs = []
    checks = []
    for poll in summaries:
        if poll["scenario"]["mode"] != "poll" or "failed" in poll:
            continue
        sc = poll["scenario"]
        push = _find(summaries, "push", _key(sc, poll=False), poll=False)
        if push is None:
            continue
        row: dict[str, Any] = {
            "scenario": _scenario(sc, "agents", "rate", "spectators", "poll_hz", "entities"),
            "stale_p50_poll_over_push": _ratio(poll, push, "staleness_ms", "p50"),
            "stale_p99_poll_over_push": _ratio(poll, push, "staleness_ms", "p99"),
            "p99_poll_over_push": _ratio(poll, push, "latency_ms", "p99"),
            "p50_poll_over_push": _ratio(poll, push, "latency_ms", "p50"),
            "bytes_per_update_poll_over_push": _ratio(
                poll, push, "bytes", "per_update_per_observer"
            ),
            "bytes_per_delivered_poll_over_push": _ratio(poll, push, "bytes", "per_delivered"),
            "cpu_per_delivered_poll_over_push": _ratio(
                poll, push, "server", "cpu_per_1k_delivered"
            ),
            "poll_coalesced_fraction": _div(
                poll["updates"]["coalesced"], poll["updates"]["expected"]
            )
            or 0.0,
            "poll_unseen_fraction": _div(
                poll["updates"]["coalesced"] + poll["updates"]["missed"],
                poll["updates"]["expected"],
            )
            or 0.0,
        }
        reference = (sc["agents"], sc["rate"], sc["spectators"], sc["poll_hz"]) == REFERENCE
        pairs.append(row)
        where = f"S={sc['spectators']} P={sc['poll_hz']:g} rate={sc['rate']:g} E={sc['entities']}"
        where += _round(sc)
        ratio = row["stale_p99_poll_over_push"]
        checks.append(
            {
                "check": f"{where}: push staleness p99 at least {PUSH_P99_BAR:g}x below poll",
                "passed": ratio is not None and ratio >= PUSH_P99_BAR,
                "value": ratio,
                # The bar is set for the 100 rps case; elsewhere the line informs.
                "bar": reference,
            }
        )
        for name, field in (
            ("bytes per applied action per observer", "bytes_per_update_poll_over_push"),
            ("bytes per delivered update", "bytes_per_delivered_poll_over_push"),
            ("server CPU per delivered update", "cpu_per_delivered_poll_over_push"),
        ):
            checks.append(
                {
                    "check": f"{where}: push below poll in {name}",
                    "passed": row[field] is not None and row[field] > 1,
                    "value": row[field],
                    "bar": reference,
                }
            )
    floors = []
    for push in summaries:
        if push["scenario"]["mode"] != "push" or "failed" in push:
            continue
        sc = push["scenario"]
        for mode in ("floor", "raw"):
            floor = _find(
                summaries, mode, _key(sc, poll=False, entities=False), poll=False, entities=False
            )
            if floor is None:
                continue
            floors.append(
                {
                    "floor": mode,
                    "scenario": _scenario(sc, "agents", "rate", "spectators", "entities"),
                    "stale_p50_push_over_floor": _ratio(push, floor, "staleness_ms", "p50"),
                    "stale_p99_push_over_floor": _ratio(push, floor, "staleness_ms", "p99"),
                    "p50_push_over_floor": _ratio(push, floor, "latency_ms", "p50"),
                    "p99_push_over_floor": _ratio(push, floor, "latency_ms", "p99"),
                    "bytes_push_over_floor": _ratio(
                        push, floor, "bytes", "per_update_per_observer"
                    ),
                    "cpu_push_over_floor": _ratio(push, floor, "server", "cpu_per_1k_delivered"),
                    "valid": push["valid"] and floor["valid"],
                }
            )
    growth = []
    for s in summaries:
        sc = s["scenario"]
        if "failed" in s or sc["mode"] == "floor" or not sc["entities"]:
            continue
        base = _find(summaries, sc["mode"], _key({**sc, "entities": 0}))
        if base is None:
            continue
        ratio = _ratio(s, base, "bytes", "per_update_per_observer")
        growth.append({"mode": sc["mode"], "entities": sc["entities"], "bytes_ratio": ratio})
        if sc["mode"] == "push":
            checks.append(
                {
                    "check": f"E={sc['entities']} S={sc['spectators']}: push bytes per update "
                    f"stay within {FLAT * 100:.0f}% of E=0",
                    "passed": ratio is not None and abs(ratio - 1) <= FLAT,
                    "value": ratio,
                }
            )
        else:
            checks.append(
                {
                    "check": f"E={sc['entities']} S={sc['spectators']} P={sc['poll_hz']:g}: "
                    "poll bytes per update grow with the state",
                    "passed": ratio is not None and ratio > 1 + FLAT,
                    "value": ratio,
                }
            )
    return {
        "push_vs_poll": pairs,
        "push_vs_floor": floors,
        "over_rounds": over_rounds(pairs, "poll") + over_rounds(floors, "floor"),
        "entities": growth,
        "checks": checks,
    }


def over_rounds(rows: Sequence[dict[str, Any]], against: str) -> list[dict[str, Any]]:
    """Each ratio's median, low and high over the rounds of a repeated sweep (``--repeat``).

    Rows of one scenario measured in two or more rounds are grouped; a ratio is
    only ever taken within a round, so each entry is a median of ratios.
    """
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        sc = row["scenario"]
        if not sc.get("round"):
            continue
        which = row.get("floor", "poll") if against == "floor" else "poll"
        key = (which, *((k, v) for k, v in sorted(sc.items()) if k != "round"))
        groups.setdefault(key, []).append(row)
    out = []
    for (which, *items), members in groups.items():
        if len(members) < 2:
            continue
        fields = [k for k, v in members[0].items() if k.endswith(("_over_push", "_over_floor"))]
        ratios = {}
        for name in fields:
            values = sorted(m[name] for m in members if isinstance(m.get(name), (int, float)))
            if values:
                ratios[name] = {
                    "median": statistics.median(values),
                    "low": values[0],
                    "high": values[-1],
                }
        out.append(
            {
                "against": which,
                "scenario": dict(items),
                "rounds": len(members),
                "valid_rounds": sum(1 for m in members if m.get("valid", True)),
                "ratios": ratios,
            }
        )
    return out


# --- the collapse curve --------------------------------------------------------------------


def keeps_up(s: dict[str, Any]) -> bool:
    """Polling keeps up: it serves what is offered, and its p99 stays within two periods."""
    sc = s["scenario"]
    if sc["mode"] != "poll":
        return True
    served, offered = s["served_rps"] or 0.0, s["offered_rps"] or 0.0
    p99 = s["latency_ms"]["p99"]
    bound = KEEPS_UP_PERIODS * 1000 / sc["poll_hz"]
    return served >= KEEPS_UP_SERVED * offered and p99 is not None and p99 <= bound


def _series(sc: dict[str, Any]) -> str:
    return f"poll P={sc['poll_hz']:g}" if sc["mode"] == "poll" else sc["mode"]


def collapse(summaries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per sweep over S (same agents, rate, entities): each series by S, and where polling breaks.

    A repeated sweep (``--repeat``) draws its first round.

    Only groups measured at two or more S are curves; the rest return nothing.
    """
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for s in summaries:
        sc = s["scenario"]
        if "failed" in s or sc.get("round", 0) > 1:  # a repeated sweep: its first round
            continue
        groups.setdefault((sc["agents"], sc["rate"], sc["entities"]), []).append(s)
    out = []
    for (agents, rate, entities), members in groups.items():
        if len({m["scenario"]["spectators"] for m in members}) < 2:
            continue
        series: dict[str, list[dict[str, Any]]] = {}
        for m in sorted(members, key=lambda m: m["scenario"]["spectators"]):
            series.setdefault(_series(m["scenario"]), []).append(m)
        breaks = {}
        for name, runs in series.items():
            if name.startswith("poll"):
                broken = [r["scenario"]["spectators"] for r in runs if not keeps_up(r)]
                breaks[name] = broken[0] if broken else None
        out.append(
            {
                "agents": agents,
                "rate": rate,
                "entities": entities,
                "series": {k: [_point(r) for r in v] for k, v in series.items()},
                "poll_breaks_at": breaks,
            }
        )
    return out


def _point(s: dict[str, Any]) -> dict[str, Any]:
    srv = s["server"]
    return {
        "spectators": s["scenario"]["spectators"],
        "mode": s["scenario"]["mode"],
        "stale_p50_ms": s["staleness_ms"]["p50"],
        "stale_p99_ms": s["staleness_ms"]["p99"],
        "p50_ms": s["latency_ms"]["p50"],
        "p99_ms": s["latency_ms"]["p99"],
        "missed_fraction": _div(s["updates"]["missed"], s["updates"]["scheduled"]),
        "delivered_fraction": s["updates"]["delivered_fraction"],
        "coalesced_fraction": _div(s["updates"]["coalesced"], s["updates"]["scheduled"]),
        "server_cpu": srv["cpu_per_second"],
        "cpu_coarse": coarse_cpu(s),
        "cpu_per_1k_delivered": srv["cpu_per_1k_delivered"],
        "bytes_per_update": s["bytes"]["per_update_per_observer"],
        "offered_rps": s["offered_rps"],
        "served_rps": s["served_rps"],
        "generator_cpu": s["generator_cpu_per_second"],
        "keeps_up": keeps_up(s),
        "valid": s["valid"],
    }


COLLAPSE_COLUMNS = (
    "S",
    "series",
    "stale p50",
    "stale p99",
    "seen p50",
    "seen p99",
    "missed",
    "coalesced",
    "srv CPU %",
    "CPU s/1k",
    "B/upd/obs",
    "served/offered req/s",
    "gen CPU %",
    "valid",
)


def collapse_rows(curve: dict[str, Any]) -> list[list[str]]:
    points = [(name, p) for name, ps in curve["series"].items() for p in ps]
    points.sort(key=lambda np: (np[1]["spectators"], MODE_ORDER.index(np[1]["mode"])))
    rows = []
    for name, p in points:
        rows.append(
            [
                f"{p['spectators']:,}",
                name + ("" if p["keeps_up"] else " (not keeping up)"),
                _f(p.get("stale_p50_ms")),
                _f(p.get("stale_p99_ms")),
                _f(p["p50_ms"]),
                _f(p["p99_ms"]),
                _pct(p["missed_fraction"]),
                _pct(p["coalesced_fraction"]),
                _coarse(p.get("cpu_coarse", False), _f((p["server_cpu"] or 0) * 100)),
                _coarse(p.get("cpu_coarse", False), _f(p["cpu_per_1k_delivered"], 3)),
                _f(p["bytes_per_update"]),
                f"{_f(p['served_rps'], 0)}/{_f(p['offered_rps'], 0)}",
                _f((p["generator_cpu"] or 0) * 100),
                "yes" if p["valid"] else "NO",
            ]
        )
    return rows


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def collapse_sentence(curve: dict[str, Any]) -> str:
    """The headline's reading in one sentence."""
    where = ", ".join(
        f"{name} stops keeping up at S = {at:,}"
        if at is not None
        else f"{name} keeps up to the end"
        for name, at in curve["poll_breaks_at"].items()
    )
    push = curve["series"].get("push", [])
    top = push[-1] if push else None
    tail = ""
    if top is not None:
        tail = (
            f"; push reaches S = {top['spectators']:,} with staleness p99 "
            f"{_f(top.get('stale_p99_ms'))} ms at "
            f"{_f((top['server_cpu'] or 0) * 100, 0)}% of a core"
        )
    return (
        f"{curve['agents']} agents x {curve['rate']:g} actions/s: {where or 'no polling runs'}"
        f"{tail}."
    )


# --- outputs -------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


LATENCY_COLUMNS = (
    "run",
    "stale p50",
    "stale p99",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "max ms",
    "1st p50",
    "applied",
    "delivered",
    "coalesced",
    "missed",
)
COST_COLUMNS = (
    "run",
    "B/upd/obs",
    "B/delivered",
    "srv CPU %",
    "CPU s/1k",
    "RSS MB",
    "idle KiB/conn",
    "served/offered req/s",
    "wasted",
    "gen CPU %",
    "egress GB/mo",
    "$/mo",
    "WS compression",
    "valid",
)


def _label(sc: dict[str, Any]) -> str:
    parts = [sc["mode"], f"S={sc['spectators']}"]
    if sc["mode"] == "poll":
        parts.append(f"P={sc['poll_hz']:g}")
    if sc["rate"] != 5:
        parts.append(f"rate={sc['rate']:g}")
    if sc["entities"]:
        parts.append(f"E={sc['entities']}")
    if sc.get("changed", 1) != 1:
        parts.append(f"K={sc['changed']}")
    if sc.get("value_bytes"):
        parts.append(f"B={sc['value_bytes']}")
    if sc.get("round"):
        parts.append(f"#{sc['round']}")
    return " ".join(parts)


def rows(summaries: Sequence[dict[str, Any]]) -> tuple[list[list[str]], list[list[str]]]:
    lat_rows, cost_rows = [], []
    for s in summaries:
        label = _label(s["scenario"])
        if "failed" in s:
            lat_rows.append([label, "failed", *([""] * (len(LATENCY_COLUMNS) - 2))])
            continue
        lat, u, b, srv = s["latency_ms"], s["updates"], s["bytes"], s["server"]
        stale = s.get("staleness_ms", {})
        lat_rows.append(
            [
                label,
                _f(stale.get("p50")),
                _f(stale.get("p99")),
                _f(lat["p50"]),
                _f(lat["p95"]),
                _f(lat["p99"]),
                _f(lat["max"]),
                _f(lat["first_p50"]),
                str(u["applied"]),
                str(u["delivered"]),
                str(u["coalesced"]),
                str(u["missed"]),
            ]
        )
        wasted = s["polls"]["wasted_fraction"]
        eg = s["egress"]
        cost_rows.append(
            [
                label,
                _f(b["per_update_per_observer"]),
                _f(b["per_delivered"]),
                _cpu(s, (srv["cpu_per_second"] or 0) * 100) if srv["measured"] else "-",
                _cpu(s, srv["cpu_per_1k_delivered"], 3),
                _f(srv["rss_mb"]),
                _f(srv["idle_rss_per_connection_kib"]),
                f"{_f(s['served_rps'], 0)}/{_f(s['offered_rps'], 0)}",
                f"{wasted * 100:.0f}%" if wasted is not None else "-",
                _f((s["generator_cpu_per_second"] or 0) * 100),
                _f(eg["gb_per_month"]),
                _f(eg["cost_per_month"], 2),
                s["compression"]["label"],
                "yes" if s["valid"] else "NO",
            ]
        )
    return lat_rows, cost_rows


def print_tables(
    summaries: Sequence[dict[str, Any]], comparison: dict[str, Any], console: Console
) -> None:
    lat_rows, cost_rows = rows(summaries)
    for title, columns, body in (
        ("Visibility latency (action sent -> seen) and updates", LATENCY_COLUMNS, lat_rows),
        ("Cost per update", COST_COLUMNS, cost_rows),
    ):
        table = Table(title=title, title_justify="left")
        for i, col in enumerate(columns):
            table.add_column(col, justify="left" if i == 0 else "right", no_wrap=i == 0)
        for row in body:
            table.add_row(*row)
        console.print(table)
    for curve in collapse(summaries):
        table = Table(title="Collapse: S x mode", title_justify="left")
        for i, col in enumerate(COLLAPSE_COLUMNS):
            table.add_column(col, justify="left" if i == 1 else "right", no_wrap=i == 1)
        for row in collapse_rows(curve):
            table.add_row(*row)
        console.print(table)
        console.print(collapse_sentence(curve), highlight=False)
    console.print(LEGEND, highlight=False)
    for line in comparison_lines(comparison):
        console.print(line, highlight=False)
    left = rooms_left(summaries)
    if left:
        console.print(left, highlight=False)
    for s in summaries:
        for w in s.get("warnings", []):
            console.print(f"[yellow]warning[/] {_label(s['scenario'])}: {w}", highlight=False)


LEGEND: Final = (
    "stale p50/p99: from each update's due time until each observer's view included it, "
    "shown or skipped (the figure to compare polling with push); p50..max ms: latency of "
    "the updates an observer was shown; 1st p50: median over actions of the first observer "
    "to see each one; observers are the spectators plus the agents, which watch the room "
    "too; CPU figures marked ~ were read in clock ticks too coarse for the run."
)


def comparison_lines(comparison: dict[str, Any]) -> list[str]:
    out = []
    for p in comparison["push_vs_poll"]:
        sc = p["scenario"]
        line = (
            f"S={sc['spectators']} rate={sc['rate']:g} P={sc['poll_hz']:g} E={sc['entities']}"
            f"{_round(sc)}: "
            f"poll/push stale p50 {_f(p['stale_p50_poll_over_push'])}x, "
            f"stale p99 {_f(p['stale_p99_poll_over_push'])}x, "
            f"seen p99 {_f(p['p99_poll_over_push'])}x, "
            f"bytes/update {_f(p['bytes_per_update_poll_over_push'], 2)}x, "
            f"bytes/delivered {_f(p['bytes_per_delivered_poll_over_push'], 2)}x, "
            f"CPU/delivered {_f(p['cpu_per_delivered_poll_over_push'], 2)}x"
        )
        if (p["bytes_per_update_poll_over_push"] or 0) < 1:
            line += (
                f" -- polling sends fewer bytes per applied action here only because it never "
                f"shows {p['poll_unseen_fraction'] * 100:.0f}% of them"
            )
        out.append(line)
    for f in comparison["push_vs_floor"]:
        sc = f["scenario"]
        out.append(
            f"S={sc['spectators']} rate={sc['rate']:g} E={sc['entities']}{_round(sc)}: "
            f"push/{f['floor']} "
            f"stale p50 {_f(f['stale_p50_push_over_floor'], 2)}x, "
            f"stale p99 {_f(f['stale_p99_push_over_floor'], 2)}x, "
            f"seen p50 {_f(f['p50_push_over_floor'], 2)}x, "
            f"p99 {_f(f['p99_push_over_floor'], 2)}x, bytes {_f(f['bytes_push_over_floor'], 2)}x, "
            f"CPU/delivered {_f(f['cpu_push_over_floor'], 2)}x"
            + ("" if f["valid"] else " (a generator was saturated: invalid)")
        )
    for r in comparison.get("over_rounds", []):
        sc = r["scenario"]
        where = f"S={sc['spectators']} rate={sc['rate']:g} E={sc['entities']}"
        if r["against"] == "poll":
            where += f" P={sc['poll_hz']:g}"
            names = [("stale_p50_poll_over_push", "poll/push stale p50"),
                     ("stale_p99_poll_over_push", "stale p99"),
                     ("p99_poll_over_push", "seen p99"),
                     ("bytes_per_update_poll_over_push", "bytes/update"),
                     ("cpu_per_delivered_poll_over_push", "CPU/delivered")]  # fmt: skip
        else:
            names = [("stale_p50_push_over_floor", f"push/{r['against']} stale p50"),
                     ("stale_p99_push_over_floor", "stale p99"),
                     ("bytes_push_over_floor", "bytes"),
                     ("cpu_push_over_floor", "CPU/delivered")]  # fmt: skip
        shown = [
            f"{label} {_f(v['median'], 2)}x ({_f(v['low'], 2)}-{_f(v['high'], 2)})"
            for name, label in names
            if (v := r["ratios"].get(name))
        ]
        out.append(
            f"{where}, median of {r['rounds']} rounds (low-high): " + ", ".join(shown)
            + ("" if r["valid_rounds"] == r["rounds"] else
               f" ({r['rounds'] - r['valid_rounds']} rounds invalid: a generator was saturated)")
        )  # fmt: skip
    for c in comparison["checks"]:
        mark = "PASS" if c["passed"] else "FAIL" if c.get("bar", True) else "below (info)"
        out.append(f"{mark} {c['check']} ({_f(c['value'], 2)})")
    return out


def markdown_table(columns: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


METHOD = """\
## How it was measured

- **Processes.** The target (`python -m statecast.server serve --store memory`, or a
  floor, `python -m statecast.loadtest.floor [--raw]`) runs in its own process, started
  fresh for every run; agents and observers run in generator processes
  (`python -m statecast.loadtest.worker`, uvloop); the harness only keeps time and reads
  /proc. Everything talks over 127.0.0.1. The floors rebroadcast each frame an agent
  sends: `floor` with `websockets.broadcast`, `raw` framing it once and writing it to
  every connection's transport with one `transport.write` each.
- **Sampled and drained observers.** Every observer is a real connection (WebSocket
  handshake and HELLO, or keep-alive HTTP polls), and every byte the target sends is
  read. Only the sample (`--sample`, agents first) decodes and timestamps every
  update, in generator processes of its own; the others are *drained*: their
  sockets are read in bulk a few times a second, pings answered, frame headers
  walked, and only the seq they reached is kept (at join, at each SNAPSHOT, at the
  end; a drained poller reads it from the ETag). With the seq of every applied action
  (from its ACK) that gives their delivered, coalesced and missed counts exactly.
  Latency comes from the sample; bytes and update counts from every observer.
- **Staleness** (the headline for comparing polling with push): for every update in the
  window and every sampled observer, the time from the update's due time (its deadline
  in the schedule) until that observer's view first includes it, whether the update was
  shown or skipped past by a later one. Push's is its delivery latency; polling's grows
  with the poll period, which "latency of the updates seen" hides (a 1 Hz poller shows
  few updates, each soon after it was polled). Updates never included by the end count
  as missed, not in staleness. The collapse plot's first panel, the CDFs and the
  per-second plot are drawn from it; "latency of the updates seen" is the secondary figure.
- **Compression.** Every WebSocket client (sampled or drained) offers permessage-deflate,
  as browsers do; whether it is used is the server's choice (`statecast serve
  --compression`, given to a server the run starts with `--server-arg=--compression`).
  The "WS compression" column says what the connections negotiated; bytes are counted
  compressed, as they cross the socket.
- **Window.** Agents act on fixed deadlines (`start + phase + n/rate`, phases
  random per agent) from the start of the warmup until the end of the window;
  observers keep watching for a short drain after it, and longer (up to
  15 s) until they have seen every update of the window. Pollers poll on a grid
  of their own (random phase) with each poll jittered by up to ±20% of a
  period, so polls do not line up with writes. Only actions whose
  deadline falls inside the window count, and bytes, requests and CPU are the
  difference between readings at its two edges.
- **Latency.** Each action carries its send time (CLOCK_MONOTONIC, one clock for
  every process on the machine); an observer subtracts it from the time the
  change became visible to it: the DIFF's arrival (push, floor) or the arrival
  of the first poll response showing that agent at that counter or later (poll).
  "1st p50" is the median over actions of the first observer to see each one.
- **Updates.** Every observer tracks each agent's action counter `n`: a jump
  from `j` to `k` delivers `k` and *coalesces away* `j+1 … k-1`. `delivered +
  coalesced + missed = observers x applied`. Polling latencies are those of the
  delivered updates only (the coalesced ones were never seen).
- **Bytes** are counted at the generators' sockets (every byte written to and
  read from the transport: request and status lines, headers, WebSocket
  handshake, frame headers and masks, pings and pongs; not TCP/IP headers).
  "B/upd/obs" is bytes in both directions per applied action per observer;
  "B/delivered" is the same total per update actually delivered. The poller
  sends lean requests (Host, User-Agent, Accept, If-None-Match); a browser's
  headers would make polling costlier still.
- **Server CPU** is the run time of the target's threads from
  /proc/PID/task/TID/schedstat (nanoseconds) between the window's edges; where that is
  unavailable, or a thread ended in between, utime + stime from /proc/PID/stat in clock
  ticks, and a figure whose two ticks of error exceed 10% of it is marked `~`. RSS from
  /proc/PID/status at the end of the window. "CPU s/1k" is target CPU seconds
  per 1,000 delivered updates. "idle KiB/conn" is the growth of the target's RSS
  from before the first connection to when every observer is connected, before
  any action, per connection. Generator CPU is each generator's own
  getrusage; a generator above 85% of a core, or with a p99 event-loop lag above
  50 ms at more than half a core, is saturated, and its run is marked invalid (one
  that lags while nearly idle was descheduled by a busy machine: a warning).
- **Collapse.** Polling keeps up while it serves at least 90% of the requests
  offered (observers x poll rate, plus the agents' POSTs) and its p99 stays
  within two poll periods.
- **Egress** is the bytes the target sent per second, projected over 30 days
  and priced at the given price per GB (10^9 bytes).
- **Rounds.** With `--repeat N` the whole sweep runs N times, the modes taking
  turns (`#1`, `#2`, … in the labels). Every ratio between modes is taken within
  a round, and each ratio's median and range over the rounds is reported: a
  machine whose speed drifts then weighs on both sides of some ratios rather than
  on one side of all of them. The collapse curve is drawn from the first round.
"""


def write_markdown(
    path: Path,
    summaries: Sequence[dict[str, Any]],
    comparison: dict[str, Any],
    meta: dict[str, Any],
    plots: list[str],
    plot_note: str | None,
) -> None:
    lat_rows, cost_rows = rows(summaries)
    curves = collapse(summaries)
    head: list[str] = []
    for curve in curves:
        head += [
            "## Collapse: S x mode",
            "",
            collapse_sentence(curve),
            "",
            markdown_table(COLLAPSE_COLUMNS, collapse_rows(curve)),
            "",
        ]
    if any(Path(p).name == "collapse.png" for p in plots):
        head[2:2] = ["![collapse](collapse.png)", ""]
    parts = [
        "# statecast benchmark: polling, push and the floors",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Machine: {meta.get('cpu_model', '?')}, {meta['cores']} cores, load average "
        f"{meta['loadavg']} at the start (figures are ratios within one run on a machine "
        f"that may be shared); {meta['started']}.",
        "",
        f"Software: {meta.get('python', '?')}, statecast {meta.get('statecast_version', '?')} "
        f"at commit {meta.get('git_commit') or 'unknown (not a git checkout)'}; servers "
        f"started with `{' '.join(meta.get('server_flags', []))}`.",
        "",
        *head,
        "## Latency and updates",
        "",
        markdown_table(LATENCY_COLUMNS, lat_rows),
        "",
        "## Cost",
        "",
        markdown_table(COST_COLUMNS, cost_rows),
        "",
        "## Comparisons and checks",
        "",
        *[f"- {line}" for line in comparison_lines(comparison)],
        "",
        "## Regimes",
        "",
        *[f"- **{_label(s['scenario'])}**: {s.get('regime', s.get('failed'))}" for s in summaries],
        "",
    ]
    left = rooms_left(summaries)
    if left:
        parts += ["## Rooms left on the target", "", left, ""]
    warnings = [(s, w) for s in summaries for w in s.get("warnings", [])]
    if warnings:
        parts += ["## Warnings", ""]
        parts += [f"- {_label(s['scenario'])}: {w}" for s, w in warnings]
        parts.append("")
    parts += ["## Plots", ""]
    if plot_note:
        parts += [plot_note, ""]
    parts += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    parts += ["", METHOD]
    path.write_text("\n".join(parts))


def write_outputs(
    summaries: Sequence[dict[str, Any]],
    raws: Sequence[dict[str, Any]],
    comparison: dict[str, Any],
    meta: dict[str, Any],
    json_path: str | None,
    report_dir: str | None,
) -> str | None:
    """Write the JSON and the report; return why plots were skipped, if they were."""
    note = None
    if json_path:
        slim = []
        for raw in raws:
            r = dict(raw)
            if "workers" in r:
                r["workers"] = [{k: v for k, v in w.items() if k != "first"} for w in r["workers"]]
            slim.append(r)
        document = {
            **meta,
            "summaries": summaries,
            "comparison": comparison,
            "collapse": collapse(summaries),
            "raw": slim,
        }
        text = json.dumps(document, indent=1)
        if json_path == "-":
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
        else:
            Path(json_path).write_text(text)
    if report_dir:
        directory = Path(report_dir)
        directory.mkdir(parents=True, exist_ok=True)
        from statecast.loadtest.plots import plot

        files, note = plot(summaries, directory)
        write_markdown(directory / "report.md", summaries, comparison, meta, files, note)
    return note

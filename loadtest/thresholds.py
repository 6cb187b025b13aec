"""``statecast bench --assert``: thresholds that fail the run, as k6's do.

A threshold is ``MODE.METRIC OP VALUE``: ``push.p99<20ms``, ``poll.cpu<0.5``,
``push.bytes<=60``. It must hold for every run of that mode in the sweep; a run whose
figure is missing (not measured) fails it too, so a threshold never passes unseen.

Metrics: ``stale_p50``, ``stale_p99`` (staleness, ms: from an update's due time until each
observer's view includes it, shown or skipped), ``p50``, ``p95``, ``p99``, ``max``
(latency of the updates seen, ms; a value may carry ``ms``), ``cpu`` (server CPU seconds
per 1,000 deliveries), ``bytes`` (bytes per update delivered), ``delivered`` (fraction of
scheduled updates delivered).
"""

from __future__ import annotations

import argparse
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

_OPS: Final[dict[str, Callable[[float, float], bool]]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
_METRICS: Final[dict[str, Callable[[dict[str, Any]], Any]]] = {
    "p50": lambda s: s["latency_ms"]["p50"],
    "p95": lambda s: s["latency_ms"]["p95"],
    "p99": lambda s: s["latency_ms"]["p99"],
    "max": lambda s: s["latency_ms"]["max"],
    "cpu": lambda s: s["server"]["cpu_per_1k_delivered"],
    "bytes": lambda s: s["bytes"]["per_delivered"],
    "delivered": lambda s: s["updates"]["delivered_fraction"],
    "stale_p50": lambda s: s["staleness_ms"]["p50"],
    "stale_p99": lambda s: s["staleness_ms"]["p99"],
}
_FORM = re.compile(r"^\s*(\w+)\.(\w+)\s*(<=|>=|<|>)\s*([0-9.]+)\s*(ms)?\s*$")


@dataclass(frozen=True)
class Threshold:
    text: str
    mode: str
    metric: str
    op: str
    value: float

    def check(self, summaries: list[dict[str, Any]]) -> list[str]:
        """What failed (empty: it held for every run of its mode)."""
        runs = [s for s in summaries if s.get("scenario", {}).get("mode") == self.mode]
        if not runs:
            return [f"{self.text}: no {self.mode} run in this sweep"]
        failures = []
        for s in runs:
            sc = s["scenario"]
            label = f"{self.mode} S={sc.get('spectators')} rate={sc.get('rate')}"
            try:
                figure = _METRICS[self.metric](s)
            except (KeyError, TypeError):
                figure = None
            if figure is None:
                failures.append(f"{self.text}: {label} has no {self.metric} figure")
            elif not _OPS[self.op](float(figure), self.value):
                failures.append(f"{self.text}: {label} has {self.metric} {figure:g}")
        return failures


def parse_threshold(text: str) -> Threshold:
    """An argparse type for ``--assert``; the error says the form and the metrics."""
    match = _FORM.match(text)
    if match is None or match.group(2) not in _METRICS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a threshold is MODE.METRIC OP VALUE, such as push.p99<20ms; "
            f"metrics: {', '.join(_METRICS)}; ops: <, <=, >, >="
        )
    mode, metric, op, value, _ = match.groups()
    return Threshold(text, mode, metric, op, float(value))

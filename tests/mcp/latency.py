"""What a tool call costs over the client's own call: ``python -m tests.mcp.latency``.

Starts a ``statecast serve`` (memory store, the example task board, no action rate
limit) and makes CALLS sequential ``add_task`` actions, each awaited before the next,
three ways in one run: the Python client's ``call()`` directly, a tool call through
``statecast mcp`` over stdio, and one over Streamable HTTP (the official MCP client in
both). Prints the p50 and p99 of each in milliseconds and their ratio to the direct
call. Numbers on a shared machine are noisy: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from statecast import connect
from tests.mcp.harness import CREW_TYPE, EXAMPLES, http_agent, http_seat, seat_args, stdio_agent
from tests.serve_process import serve_process


async def timed(calls: int, call: Callable[[int], Awaitable[Any]]) -> list[float]:
    out = []
    for i in range(calls):
        start = time.perf_counter()
        await call(i)
        out.append((time.perf_counter() - start) * 1000)
    return out


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
    }


async def main(calls: int) -> dict[str, Any]:
    results: dict[str, Any] = {"calls": calls}
    async with serve_process("--room-type", CREW_TYPE, "--action-rate=0", cwd=EXAMPLES) as server:
        async with connect(server.room_url("crew-direct"), client="direct") as room:
            results["direct"] = summary(
                await timed(calls, lambda i: room.call("add_task", {"title": f"t{i}"}))
            )
        async with stdio_agent(*seat_args(server, "crew-stdio", "a")) as agent:
            results["mcp_stdio"] = summary(
                await timed(calls, lambda i: agent.call("add_task", title=f"t{i}"))
            )
        async with (
            http_seat(*seat_args(server, "crew-http", "a")) as seat,
            http_agent(seat.url) as agent,
        ):
            results["mcp_http"] = summary(
                await timed(calls, lambda i: agent.call("add_task", title=f"t{i}"))
            )
    direct = results["direct"]["p50_ms"]
    for way in ("mcp_stdio", "mcp_http"):
        results[way]["p50_vs_direct"] = round(results[way]["p50_ms"] / direct, 2)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200, help="calls per way (1 to 5000)")
    args = parser.parse_args()
    if not 1 <= args.calls <= 5000:
        parser.error("--calls must be from 1 to 5000")
    print(json.dumps(asyncio.run(asyncio.wait_for(main(args.calls), 600)), indent=2))

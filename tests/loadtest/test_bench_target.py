"""What the bench measures against: the server's flags, what its connections negotiated,
external targets, and the target's CPU at a resolution finer than clock ticks."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from statecast.loadtest.measure import CLOCK_TICKS, ProcSample, cpu_between, read_proc
from tests.loadtest.test_commands import _run

TINY = ["--agents", "1", "--rate", "5", "--spectators", "3", "--sample", "2"]
TINY += ["--duration", "1.5", "--warmup", "0.5", "--no-live"]


def _bench(tmp_path: Path, name: str, *extra: str) -> tuple[dict[str, Any], str]:
    path = tmp_path / f"{name}.json"
    done = _run("bench", "--modes", "push", *TINY, "--json", str(path), *extra)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [summary] = json.loads(path.read_text())["summaries"]
    return summary, done.stdout


def test_compression_is_negotiated_with_a_server_that_offers_it(tmp_path: Path) -> None:
    """--server-arg=--compression reaches the server the run starts; every connection (the
    sampled ones and the drained ones, which inflate what they read) negotiates
    permessage-deflate, the bytes per update change, and the tables name what was used."""
    plain, plain_out = _bench(tmp_path, "plain")
    deflate, deflate_out = _bench(tmp_path, "deflate", "--server-arg=--compression")
    assert plain["compression"]["negotiated"] == {"none": 4}
    assert deflate["compression"]["negotiated"] == {"permessage-deflate": 4}
    assert "--compression" in deflate["compression"]["server_flags"]
    assert "permessage-deflate" in deflate_out and "permessage-deflate" not in plain_out
    for s in (plain, deflate):  # the drained spectators still account for every update
        u = s["updates"]
        assert u["missed"] == 0 and u["delivered"] == u["applied"] * 4
    plain_bytes = plain["bytes"]["down_per_update_per_observer"]
    deflate_bytes = deflate["bytes"]["down_per_update_per_observer"]
    assert deflate_bytes != plain_bytes


def test_floors_and_server_flags_are_refused_with_an_external_target() -> None:
    """A floor is started here: against --ws/--http it would compare two machines. And a
    running server's flags cannot be set from here. Both are said before anything runs."""
    external = ["--ws", "ws://127.0.0.1:9", "--http", "http://127.0.0.1:9"]
    floor = _run("bench", "--modes", "push,floor", *external)
    assert floor.returncode == 2
    assert "--modes floor with --ws/--http" in floor.stdout and "drop them" in floor.stdout
    flags = _run("bench", "--modes", "push", *external, "--server-arg=--compression")
    assert flags.returncode == 2 and "start it with those flags" in flags.stdout


def test_server_cpu_is_read_in_nanoseconds_not_ticks() -> None:
    """A few ms of CPU, below one 10 ms tick of error, is measured from schedstat."""
    before = read_proc(os.getpid())
    assert before is not None and before.cpu_ns is not None
    end = time.process_time() + 0.03
    while time.process_time() < end:
        pass
    after = read_proc(os.getpid())
    assert after is not None
    cpu, source, error = cpu_between(before, after)
    assert source == "schedstat" and error == 0.0
    assert 0.03 <= cpu < 0.03 + (after.cpu - before.cpu) + 2 / CLOCK_TICKS


def test_cpu_from_ticks_says_its_error_and_is_used_when_threads_ended() -> None:
    """A thread that ended between the readings took its schedstat time with it: the ticks
    are used then, with their quantisation error (two ticks over the figure)."""
    tick = 1 / CLOCK_TICKS
    before = ProcSample(cpu=1.0, rss=0, peak_rss=0, cpu_ns=1_000_000_000)
    lost = ProcSample(cpu=1.0 + 10 * tick, rss=0, peak_rss=0, cpu_ns=1_000_000_000)
    cpu, source, error = cpu_between(before, lost)
    assert source == "ticks" and abs(cpu - 10 * tick) < 1e-9 and abs(error - 0.2) < 1e-9
    exact = ProcSample(cpu=1.0 + tick, rss=0, peak_rss=0, cpu_ns=1_012_345_678)
    assert cpu_between(before, exact) == (0.012345678, "schedstat", 0.0)


async def test_an_external_target_keeps_its_rooms_named_and_says_how_to_clean_them(
    tmp_path: Path,
) -> None:
    """Against a running server (with --compression, which the harness's clients then
    negotiate), the rooms the bench made are named bench-<run id>-<n>, are the ones that
    server lists, and the console and report name them and say how they go away."""
    import re

    import aiohttp

    from tests.serve_process import STATECAST, run_to_end, serve_process

    async with serve_process("--compression", cwd=tmp_path) as server:
        command = [str(STATECAST), "bench", "--modes", "push", *TINY, "--ws", server.ws_url]
        command += ["--http", server.http_url, "--server-pid", str(server.proc.pid)]
        command += ["--json", str(tmp_path / "b.json"), "--report", str(tmp_path / "r")]
        code, out, err = await run_to_end(*command, cwd=tmp_path, timeout=120)
        assert code == 0, out[-3000:] + err[-3000:]
        [summary] = json.loads((tmp_path / "b.json").read_text())["summaries"]
        assert re.fullmatch(r"bench-[0-9a-f]{6}-1", summary["room"])
        assert summary["compression"]["negotiated"] == {"permessage-deflate": 4}
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{server.http_url}/rooms") as answer,
        ):
            listed = json.dumps(await answer.json())
        assert summary["room"] in listed
    for text in (out, (tmp_path / "r" / "report.md").read_text()):
        assert f"Rooms created on the target: {summary['room']}" in text
        assert "--idle-unload" in text


def test_cpu_figures_read_in_coarse_ticks_are_marked(bench_output: dict[str, Any]) -> None:
    """A run whose server CPU came from ticks with more than 10% error shows ~ before its CPU
    figures and says why; one read from schedstat shows them plain."""
    from statecast.loadtest.report import _warnings, collapse, collapse_rows, rows

    exact = next(s for s in bench_output["summaries"] if s["scenario"]["mode"] == "push")
    assert exact["server"]["cpu_source"] == "schedstat"
    coarse = {**exact, "server": {**exact["server"], "cpu_source": "ticks", "cpu_error": 0.4}}
    _, cost = rows([exact, coarse])
    assert not cost[0][3].startswith("~") and cost[1][3].startswith("~")
    assert cost[1][4].startswith("~")
    assert any("read in clock ticks" in w and "40%" in w for w in _warnings(coarse, {}))
    wider = {**coarse, "scenario": {**coarse["scenario"], "spectators": 40}}
    [curve] = collapse([exact, wider])
    assert [r[8].startswith("~") for r in collapse_rows(curve)] == [False, True]

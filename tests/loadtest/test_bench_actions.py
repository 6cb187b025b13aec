"""``statecast bench-actions``: --json, and a running server as its target (--ws)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp

from tests.loadtest.test_commands import _run
from tests.serve_process import STATECAST, run_to_end, serve_process

SHORT = ["--rooms", "2", "--agents", "4", "--duration", "1", "--warmup", "0.2"]


async def test_a_running_server_is_measured_and_its_rooms_named(tmp_path: Path) -> None:
    async with serve_process("--action-rate", "0", cwd=tmp_path) as server:
        command = [str(STATECAST), "bench-actions", *SHORT, "--ws", server.ws_url]
        command += ["--server-pid", str(server.proc.pid), "--json", "-"]
        code, out, err = await run_to_end(*command, cwd=tmp_path, timeout=120)
        assert code == 0, err[-3000:]
        document = json.loads(out)  # stdout is the JSON alone
        [result] = document["results"]
        assert result["store"] == "external" and result["rooms"] == 2
        assert result["actions_per_s"] > 0 and result["server_cpu_s"] > 0
        assert re.fullmatch(r"bench-[0-9a-f]{6}-1-", result["room_prefix"])
        assert document["target"] == server.ws_url and document["git_commit"]
        assert "rooms left on the target: " + result["room_prefix"] + "*" in err
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{server.http_url}/rooms") as answer,
        ):
            listed = json.dumps(await answer.json())
        assert f"{result['room_prefix']}0" in listed and f"{result['room_prefix']}1" in listed


def test_json_of_servers_it_starts_and_what_it_refuses(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    done = _run(
        "bench-actions", "--stores", "memory", "--durability", "ack", *SHORT, "--json", str(path)
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [result] = json.loads(path.read_text())["results"]
    assert result["store"] == "memory" and result["server_cpu_s_per_1k"] > 0
    refused = _run("bench-actions", "--ws", "ws://127.0.0.1:9", "--stores", "sqlite")
    assert refused.returncode == 2 and "start it with the store to measure" in refused.stdout
    orphan = _run("bench-actions", "--server-pid", "1")
    assert orphan.returncode == 2 and "give its --ws too" in orphan.stdout

"""``statecast serve`` refuses a bad flag, a port in use and a store held elsewhere with one
line that names the flag and what to do, and exit status 2: never a traceback, never a
process left running."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.redis_server import free_port
from tests.serve_process import run_serve, serve_process


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--port", "70000"], "--port (STATECAST_PORT): 70000 must be at most 65535"),
        (["--port", "abc"], "--port: 'abc' is not a whole number"),
        (["--log-level", "verbose"], "--log-level (STATECAST_LOG_LEVEL): 'verbose' is not one of"),
        (
            ["--hello-timeout", "-1"],
            "--hello-timeout (STATECAST_HELLO_TIMEOUT): -1.0 must be above",
        ),
        (["--lease-ttl", "nan"], "--lease-ttl: 'nan' is not a finite number"),
        (["--max-rooms", "0"], "--max-rooms (STATECAST_MAX_ROOMS): 0 must be at least 1"),
        (["--durability", "fast"], "'fast' is not one of ('ack', 'async')"),
        (["--port", "8791", "--http-port", "8791"], "--port and --http-port are both 8791"),
    ],
)
async def test_a_bad_flag_is_one_line_naming_it(tmp_path: Path, args: list[str], says: str) -> None:
    # run_serve passes --port=0 --http-port=0 first: the flags here come after and win.
    code, err = await run_serve("--store=memory", *args, cwd=tmp_path)
    assert code == 2
    assert says in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


async def test_a_port_in_use_is_one_line_naming_the_flag(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = await run_serve("--store=memory", f"--http-port={port}", cwd=tmp_path)
        assert code == 2
        assert f"statecast: --http-port {port}: the port is in use" in err
        assert "Traceback" not in err
        code, err = await run_serve("--store=memory", f"--port={port}", cwd=tmp_path)
        assert code == 2 and f"statecast: --port {port}: the port is in use" in err


async def test_a_store_held_by_another_server_is_one_line(tmp_path: Path) -> None:
    db = f"--store=sqlite:{tmp_path / 'data' / 'statecast.db'}"
    async with serve_process(db, cwd=tmp_path):
        code, err = await run_serve(db, f"--port={free_port()}", cwd=tmp_path)
    assert code == 2
    assert "cannot be opened (database is locked)" in err and "another --store" in err
    assert "Traceback" not in err

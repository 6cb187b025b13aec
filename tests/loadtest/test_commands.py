"""The harness plugs into ``statecast`` through an entry point; the server runs without it."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Run ``statecast`` in a fresh interpreter in which statecast.loadtest cannot be imported,
# as on an install without the harness.
WITHOUT_HARNESS = """
import importlib.abc, sys

class NoHarness(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "statecast.loadtest" or name.startswith("statecast.loadtest."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoHarness())
from statecast.server.cli import main
sys.exit(main(sys.argv[1:]))
"""


WITH_HARNESS = "import sys; from statecast.server.cli import main; sys.exit(main(sys.argv[1:]))"


def _run(*args: str, without_harness: bool = False) -> subprocess.CompletedProcess[str]:
    code = WITHOUT_HARNESS if without_harness else WITH_HARNESS
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "200"},  # help lines unwrapped
    )


def test_server_never_imports_the_harness() -> None:
    """No module under server/ or protocol/ imports statecast.loadtest."""
    offenders = []
    for folder in ("server", "protocol"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                offenders += [f"{path}: {n}" for n in names if "loadtest" in n.split(".")]
    assert offenders == []


def test_serve_runs_without_the_harness() -> None:
    """With statecast.loadtest unimportable, ``serve --help`` works and bench is left out."""
    serve = _run("serve", "--help", without_harness=True)
    assert serve.returncode == 0, serve.stderr
    assert "--max-room-connections" in serve.stdout
    top = _run("--help", without_harness=True)
    assert top.returncode == 0
    assert "{serve,token,mcp}" in top.stdout  # the harness's commands left out
    assert "command 'bench' unavailable" in top.stderr


def test_bench_commands_come_from_the_entry_point() -> None:
    """With the harness installed, ``bench`` and ``bench-actions`` show every default."""
    bench = _run("bench", "--help")
    assert bench.returncode == 0, bench.stderr
    for shown in ("default: poll,push,floor", "default: 0,12", "default: 20", "default: 50"):
        assert shown in bench.stdout, shown
    actions = _run("bench-actions", "--help")
    assert actions.returncode == 0, actions.stderr
    for shown in ("default: memory,sqlite", "default: ack,async", "default: 1,20,100"):
        assert shown in actions.stdout, shown


def test_bench_flags_out_of_range_are_refused_naming_the_flag() -> None:
    """A negative duration, a zero poll rate or repeat, negative workers or spectators: one
    line naming the flag and its bound, exit 2, before anything runs."""
    cases = [
        ("bench", "--duration", "-5", "must be above 0"),
        ("bench", "--poll-hz", "0", "must be above 0"),
        ("bench", "--repeat", "0", "must be at least 1"),
        ("bench", "--workers", "-3", "must be at least 0"),
        ("bench", "--spectators", "10,-5", "must be at least 0"),
        ("bench-actions", "--rooms", "0", "must be at least 1"),
        ("bench-catchup", "--touched", "0", ">= 1"),
    ]
    for command, flag, value, why in cases:
        done = _run(command, flag, value)
        assert done.returncode == 2, (flag, done.stderr)
        assert f"argument {flag}" in done.stderr and why in done.stderr, done.stderr


def test_bench_says_when_the_open_file_limit_is_too_low_for_its_spectators() -> None:
    def low_limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300))

    done = subprocess.run(
        [sys.executable, "-c", WITH_HARNESS, "bench", "--spectators", "1000", "--modes", "push"],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=low_limit,
    )
    assert done.returncode == 2
    assert "ulimit -n" in done.stdout and "--spectators 1000" in done.stdout


async def test_a_server_pid_that_does_not_serve_the_target_is_refused() -> None:
    """--server-pid must name the process listening on --ws/--http: another one's CPU and
    memory would be reported as the target's."""
    from statecast.loadtest.runner import BenchError, check_server_pid
    from tests.helpers import running_server

    async with running_server() as server:  # this process listens on both ports
        check_server_pid(os.getpid(), [server.ws_url, server.http_url])
        with pytest.raises(BenchError, match="does not listen on the target"):
            check_server_pid(os.getppid(), [server.ws_url, server.http_url])
    with pytest.raises(BenchError, match="no such process"):
        check_server_pid(2**22 + 12345, ["ws://127.0.0.1:9"])


def test_thresholds_pass_or_fail_the_run() -> None:
    """--assert: a threshold every run meets exits 0; one that fails is named, exit 1."""
    run = ["bench", "--modes", "push", "--spectators", "2", "--agents", "1", "--rate", "5"]
    run += ["--duration", "1", "--warmup", "0.2", "--no-live"]
    met = _run(*run, "--assert", "push.p99<60000ms", "--assert", "push.delivered>0.5")
    assert met.returncode == 0, met.stdout[-2000:] + met.stderr[-2000:]
    assert "ok   push.p99<60000ms" in met.stdout
    failed = _run(*run, "--assert", "push.p50<0.000001")
    assert failed.returncode == 1
    assert "FAIL push.p50<0.000001" in failed.stdout and "has p50" in failed.stdout
    assert _run("bench", "--assert", "push.speed<3").returncode == 2


def test_handler_cost_runs_and_reports_each_handler() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "statecast.loadtest.handler_cost"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.endswith("µs/action")]
    assert len(lines) == 3 and all(float(line.split()[-2]) > 0 for line in lines)

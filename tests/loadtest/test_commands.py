"""The harness plugs into ``statecast`` through an entry point; the server runs without it."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

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
    assert "{serve,token}" in top.stdout
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

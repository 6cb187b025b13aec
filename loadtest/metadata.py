"""What a result was measured on and with: the machine, the software, the command.

Every result file and report carries it, so two results can be told apart (and compared
fairly) months later: CPU model and cores, the load average at the start (the machine
may be shared), Python, statecast's version and git commit, the flags of the servers the
run started and the harness's own command line.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import statecast
from statecast.loadtest.runner import ONE_HOST


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what the platform says."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def git_commit() -> str | None:
    """The commit of the statecast tree this runs from, with ``+dirty`` for local changes;
    None for an installed wheel (no repository around it)."""
    here = Path(statecast.__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here, capture_output=True, text=True, timeout=5,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def version() -> str:
    try:
        return metadata.version("statecast")
    except metadata.PackageNotFoundError:
        return "unknown"


def run_meta(command: str, started: str, server_args: list[str]) -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "command": command,
        "started": started,
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "loadavg": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "statecast_version": version(),
        "git_commit": git_commit(),
        # Every server the run starts gets these, then per-run sizing (each summary's
        # compression.server_flags has the whole list); --server-arg's come last and win.
        "server_flags": ["--store", "memory", *ONE_HOST, *server_args],
    }

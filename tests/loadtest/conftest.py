"""The tiny bench run several test modules read (run once per session)."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from typing import Any

import pytest

from statecast.server.cli import main


@pytest.fixture(scope="session")
def bench_output(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One tiny run of every mode (a few seconds each), shared by the checks below.

    Two agents and four spectators with a sample of three: one spectator decodes every
    update, three are drained in a generator of their own. matplotlib is made
    unimportable for the run, as on an install without the ``plot`` extra.
    """
    out = tmp_path_factory.mktemp("bench")
    console = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(console):
        patch.setitem(sys.modules, "matplotlib", None)
        code = main(
            [
                "bench",
                "--modes", "poll,push,floor,raw",
                "--agents", "2",
                "--rate", "5",
                "--spectators", "4",
                "--sample", "3",
                "--poll-hz", "5",
                "--duration", "1.5",
                "--warmup", "0.5",
                "--json", str(out / "bench.json"),
                "--report", str(out / "report"),
                "--no-live",
            ]
        )  # fmt: skip
    document: dict[str, Any] = json.loads((out / "bench.json").read_text())
    document["exit_code"] = code
    document["dir"] = str(out)
    document["console"] = console.getvalue()
    return document

"""The JS client's Node suite (``node --test tests/js``) and its shared vectors.

The vectors are generated from protocol/ (tests/js/vectors.py) and committed, so the
Node suite needs no Python; this test keeps the committed copy equal to what protocol/
generates now, so the JS and Python op and sync rules cannot drift apart.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import SCALE
from tests.js import vectors

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def test_committed_vectors_equal_what_protocol_generates() -> None:
    """tests/js/vectors.json is what protocol/ produces now (regenerate: make vectors)."""
    committed = (HERE / "vectors.json").read_text(encoding="utf-8")
    assert committed == vectors.render(), "tests/js/vectors.json is stale: run `make vectors`"


def node_binary() -> str:
    node = os.environ.get("STATECAST_NODE") or shutil.which("node")
    if node is None:
        pytest.fail(
            "Node.js is not installed: the JS client's tests need node 20 or newer "
            "(apt-get install -y nodejs). `make test` and .ci/run install it when missing.",
            pytrace=False,
        )
    return node


def test_node_suite_passes() -> None:
    """node --test runs ops, sync and client tests of statecast.js; every one passes."""
    node = node_binary()
    tests = sorted(str(p.relative_to(ROOT)) for p in HERE.glob("*.test.js"))
    done = subprocess.run(
        [node, "--test", *tests],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120 * SCALE,
        check=False,
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report[-6000:]
    passed = re.search(r"^# pass (\d+)$", report, re.M)
    assert passed is not None and int(passed.group(1)) > 300, report[-2000:]
    assert re.search(r"^# fail 0$", report, re.M), report[-2000:]

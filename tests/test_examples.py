"""examples/ runs as the README says, against a real ``statecast serve``, and is the README's code.

The server is the installed ``statecast`` script started in examples/ with the
README's ``--room-type`` line; each example is a subprocess of this Python, given
the server's URL by argument or by ``STATECAST_URL`` as a user would.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

from tests.helpers import TIMEOUT
from tests.serve_process import run_to_end, serve_process

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
ROOM_TYPE = "counter-*=mypackage.rooms:Counter"
BOARD_TYPE = "board-*=mypackage.tasks:TaskBoard"
ENV = {k: v for k, v in os.environ.items() if not k.startswith("STATECAST_")}


async def run_example(name: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run examples/NAME to its end; its stdout (it must exit 0 and print no error)."""
    code, out, err = await run_to_end(
        sys.executable, str(EXAMPLES / name), *args,
        cwd=ROOT, env={**ENV, **(env or {})}, timeout=TIMEOUT * 2,
    )  # fmt: skip
    assert code == 0, f"{name} exited {code}: {err}"
    assert not err, err
    return out


async def test_every_example_runs_against_a_real_server() -> None:
    types = ("--room-type", ROOM_TYPE, "--room-type", BOARD_TYPE)
    async with serve_process(*types, cwd=EXAMPLES) as server:
        spectator = await asyncio.create_subprocess_exec(
            sys.executable, str(EXAMPLES / "spectator.py"), server.ws_url,
            cwd=ROOT,
            env={**ENV, "PYTHONUNBUFFERED": "1"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert spectator.stdout is not None
        try:
            first = await asyncio.wait_for(spectator.stdout.readline(), TIMEOUT * 2)
            assert first.decode().startswith("no room lobby yet: waiting for an agent")

            # Twice: the first run creates the room, which the waiting spectator then shows;
            # the second reads where bot-1 is and moves it on (a change, a diff).
            for x, seq in ((1, 1), (2, 2)):
                out = await run_example("agent.py", env={"STATECAST_URL": server.ws_url})
                state = {"bots": {"bot-1": {"x": x, "y": 0}}}
                assert out.splitlines() == [
                    f"applied as diff {seq} state: {state}",
                    "refused: invalid del: no key 'no-such-key'",
                ]
                while True:
                    seen = (await asyncio.wait_for(spectator.stdout.readline(), TIMEOUT)).decode()
                    if not seen.startswith("no room lobby yet"):
                        break
                if seq == 1:
                    assert seen == f"state at seq 1 {state}\n"
                else:
                    assert seen.startswith(f"Changed(seq={seq}, ")
                    assert seen.endswith(f"-> {state}\n")

            out = await run_example("counter.py", server.ws_url)
            assert out.splitlines() == [
                "n = 0",
                "n = 1",
                "refused: invalid add takes a positive int",
            ]

            out = await run_example("taskboard.py", server.ws_url)
            assert out.splitlines() == [
                "claimed t1 at seq 1",
                "claimed t2 at seq 2",
                "refused: conflict no free task",
            ]
        finally:
            if spectator.returncode is None:
                spectator.send_signal(signal.SIGINT)  # Ctrl-C: the example ends quietly
            _, err = await asyncio.wait_for(spectator.communicate(), TIMEOUT)
        assert spectator.returncode == 0, err.decode()


def test_the_readme_shows_the_examples_as_they_are() -> None:
    """Every README block introduced by an examples/ path is that file, byte for byte."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"`(examples/[\w/]+\.py)`:\n\n```python\n(.*?)```\n", readme, re.S)
    shown = {path for path, _ in blocks}
    assert shown == {
        "examples/agent.py",
        "examples/spectator.py",
        "examples/mypackage/rooms.py",
        "examples/mypackage/tasks.py",
        "examples/taskboard.py",
    }
    for path, code in blocks:
        assert code == (ROOT / path).read_text(), f"the README's {path} differs from the file"
    assert f"--room-type '{ROOM_TYPE}'" in readme
    assert f"--room-type '{BOARD_TYPE}'" in readme

"""``--room-type 'counter-*=mypackage.rooms:Counter'`` from the folder that holds ``mypackage/``.

Each test starts the installed ``statecast`` script in a temporary directory, as
a user would, and never puts that directory on the test's own ``sys.path``.
"""

from __future__ import annotations

from pathlib import Path

from tests.helpers import bare
from tests.serve_process import run_serve, serve_process

#: The README's example room type, as a user would write it.
ROOMS_PY = Path(__file__).resolve().parents[2] / "examples" / "mypackage" / "rooms.py"


def make_package(root: Path, name: str = "mypackage") -> None:
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "rooms.py").write_text(ROOMS_PY.read_text())


async def test_room_type_is_imported_from_the_current_directory(tmp_path: Path) -> None:
    make_package(tmp_path)
    spec = "counter-*=mypackage.rooms:Counter"
    async with (
        serve_process("--room-type", spec, cwd=tmp_path) as server,
        bare(f"{server.ws_url}/rooms/counter-1") as agent,
    ):
        await agent.hello("agent", client="a")
        snapshot = await agent.recv()
        assert (snapshot[0], snapshot[2:]) == (3, [0, {"n": 0}])
        await agent.send([4, 1, "add", 2])
        assert await agent.recv() == [5, 1, [[0, ["n"], 2]]]
        assert await agent.recv() == [7, 1, 1]
        await agent.send([4, 2, "add", 0])
        assert (await agent.recv())[:3] == [8, 2, "invalid"]


async def test_missing_room_type_module_names_what_was_searched(tmp_path: Path) -> None:
    """The error lists sys.path, current directory first; serve exits 2."""
    code, err = await run_serve("--room-type", "c-*=nopackage.rooms:Counter", cwd=tmp_path)
    assert code == 2
    assert "No module named 'nopackage'" in err
    searched = err.split("searched sys.path: ", 1)[1]
    assert searched.startswith(str(tmp_path))


async def test_missing_class_names_the_module_file(tmp_path: Path) -> None:
    make_package(tmp_path)
    code, err = await run_serve("--room-type", "c-*=mypackage.rooms:Nope", cwd=tmp_path)
    assert code == 2
    assert str(tmp_path / "mypackage" / "rooms.py") in err and "'Nope'" in err

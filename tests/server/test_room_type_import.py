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


async def test_a_room_keeps_its_type_when_the_server_restarts_without_it(tmp_path: Path) -> None:
    """A room created as mypackage.rooms:Counter, served after a restart without the flag,
    is never served as a document room (its rules are its security): HELLO closes 4011 and
    HTTP answers 503 naming the type and the flag, the state is untouched, the error is
    logged once, and other rooms keep serving."""
    import aiohttp

    make_package(tmp_path)
    db = f"--store=sqlite:{tmp_path / 'rooms.db'}"
    async with (
        serve_process(db, "--room-type", "counter-*=mypackage.rooms:Counter", cwd=tmp_path) as s,
        bare(f"{s.ws_url}/rooms/counter-1") as agent,
    ):
        await agent.hello("agent", client="a")
        await agent.recv()
        await agent.send([4, 1, "add", 2])
        await agent.recv()
        assert await agent.recv() == [7, 1, 1]
    async with serve_process(db, cwd=tmp_path) as server:
        async with bare(f"{server.ws_url}/rooms/counter-1") as agent:
            await agent.send([1, {"v": 1, "role": "agent", "client": "a"}])
            assert await agent.closed() == 4011
            assert "mypackage.rooms:Counter" in (agent.ws.close_reason or "")
        async with aiohttp.ClientSession() as http:
            patch = {"client": "a", "aid": 2, "name": "patch", "args": [[0, ["n"], 99]]}
            async with http.post(f"{server.http_url}/rooms/counter-1/actions", json=patch) as r:
                body = await r.json()
                assert r.status == 503 and body["code"] == "room_type_missing"
                assert (
                    "--room-type" in body["message"]
                    and "mypackage.rooms:Counter" in body["message"]
                )
            async with http.get(f"{server.http_url}/rooms/counter-1") as r:
                details = await r.json()
                assert details["type"] == "mypackage.rooms:Counter"
                assert details["actions"] == [] and details["error"]["code"] == "room_type_missing"
            async with http.get(f"{server.http_url}/rooms/counter-1/state") as r:
                assert r.status == 503
            async with http.post(f"{server.http_url}/rooms/doc-1/actions", json=patch) as r:
                assert r.status == 200  # other rooms are served
        logged = [e for e in server.log if e.get("event", "").startswith("room type not")]
        assert len(logged) == 1 and logged[0]["type"] == "mypackage.rooms:Counter"
    async with (
        serve_process(db, "--room-type", "counter-*=mypackage.rooms:Counter", cwd=tmp_path) as s,
        bare(f"{s.ws_url}/rooms/counter-1") as agent,
    ):
        await agent.hello("agent", client="a")
        assert (await agent.recv())[3] == {"n": 2}  # untouched: the patch was never applied


async def test_overlapping_room_type_patterns_are_reported_at_start(tmp_path: Path) -> None:
    make_package(tmp_path)
    grid = "statecast.server.rooms.grid:GridRoom"
    async with serve_process(
        "--room-type", "c-*=mypackage.rooms:Counter", "--room-type", f"c-grid-*={grid}",
        cwd=tmp_path,
    ) as server:  # fmt: skip
        warned = [e["event"] for e in server.log if "overlap" in e.get("event", "")]
        assert len(warned) == 1 and "'c-*'" in warned[0] and "first given wins" in warned[0]

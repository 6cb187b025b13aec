"""Views over the wire (docs/protocol.md §5.12): a subscriber sees the part of a room it
asks for or is allowed, live, on resume and after a view change; a token's view claim and
a room type's private parts hold on every way out (WebSocket and HTTP)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import websockets
from websockets.asyncio.server import serve

from statecast import ActionContext, Room, action, connect
from statecast.protocol import ops
from statecast.protocol.netchange import apply_net_change
from statecast.protocol.views import effective, from_prefixes, view_of
from statecast.server.jwt_auth import mint
from tests.cluster_nodes import CLUSTER_FLAGS, cluster
from tests.faultproxy import FaultProxy
from tests.helpers import (
    SCALE,
    bare,
    eventually,
    http_session,
    make_room,
    running_server,
    unpack,
)
from tests.server.test_catchup import churn, fill
from tests.server.test_catchup import state_of as catchup_state

SPEC = f"game-*={__name__}:Game"
SECRET = "statecast-test-secret-0123456789abcdef"
PRIVATE = [["hands", "{client}"]]


class Game(Room):
    """Players on a board, each with a hand only its own agent sees."""

    private = (("hands", "{client}"),)

    def initial_state(self) -> dict[str, Any]:
        return {"board": {}, "players": {}, "hands": {}}

    @action("join")
    def join(self, ctx: ActionContext, args: Any) -> None:
        ctx.set(["players", ctx.client], {"hp": 10, "note": f"SECRET-{ctx.client}"})
        ctx.set(["hands", ctx.client], [f"CARD-{ctx.client}"])

    @action("move")
    def move(self, ctx: ActionContext, args: Any) -> None:
        ctx.set(["board", str(args)], ctx.client)
        hp = ctx.state["players"][ctx.client]["hp"]
        ctx.set(["players", ctx.client, "hp"], hp - 1)

    @action("draw")
    def draw(self, ctx: ActionContext, args: Any) -> None:
        ctx.insert(["hands", ctx.client, -1], f"CARD-{ctx.client}-{args}")

    @action("leave")
    def leave(self, ctx: ActionContext, args: Any) -> None:
        ctx.delete(["players", ctx.client])

    @action("wipe")
    def wipe(self, ctx: ActionContext, args: Any) -> None:
        """Replaces every player at once: an op above the views' prefixes."""
        ctx.set(["players"], {p: {"hp": 1, "note": f"SECRET-{p}"} for p in args})


async def state_of(
    http: Any, base: str, room: str, headers: dict[str, str] | None = None, **query: str
) -> dict[str, Any]:
    async with http.get(f"{base}/rooms/{room}/state", params=query, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())


async def play(url: str, agents: list[str], rounds: int) -> None:
    """Agents join and act all over the room."""
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(connect(url, client=a)) for a in agents]
        for c in clients:
            await c.act("join", None)
        for r in range(rounds):
            for i, c in enumerate(clients):
                await c.act("move", f"{r}-{i}")
                await c.act("draw", r)
        await clients[-1].act("leave", None)
        await clients[0].act("wipe", agents[:-1])


async def test_a_view_gets_only_its_part_and_equals_the_view_of_the_state() -> None:
    view = [["board"], ["players", "p1"]]
    async with running_server(room_types=(SPEC,)) as server, http_session() as http:
        url = server.room_url("game-1")
        await make_room(server, "game-1")
        frames: list[Any] = []
        async with (
            connect(url, role="spectator", view=view) as watcher,
            bare(url) as raw,
        ):
            welcome = await raw.hello("spectator", view=view)
            assert welcome["view"] == view and welcome["sync"] == "snapshot"
            frames.append(await raw.recv())
            await play(url, ["p1", "p2", "p3"], 3)
            head = (await state_of(http, server.http_url, "game-1"))["seq"]
            await watcher.wait_for_seq(head)  # "wipe" touched p1: the view changed at the head
            with contextlib.suppress(TimeoutError):
                while True:
                    frames.append(await raw.recv(timeout=0.5))
            whole = (await state_of(http, server.http_url, "game-1"))["state"]
            expected = view_of(whole, effective(view, None, PRIVATE, None))
            assert watcher.state == expected
            assert set(expected) == {"board", "players"} and set(expected["players"]) == {"p1"}
        # Only VIEW_DIFFs after the view's SNAPSHOT, numbered one after the other.
        kinds = [m[0] for m in frames]
        assert kinds[0] == 3 and set(kinds[1:]) == {10}, kinds
        since = frames[0][2]
        for message in frames[1:]:
            assert message[1] == since
            since = message[2]
        for message in frames[1:]:
            for op in message[3]:
                path = op[1]
                assert (
                    path[0] == "board"
                    or path[:2] == ["players", "p1"]
                    or (path == ["players"] and set(op[2]) == {"p1"})
                ), op
        assert b"SECRET-p2" not in msgpack.packb(frames)
        assert since == head


async def test_private_parts_show_only_to_their_agent() -> None:
    async with running_server(room_types=(SPEC,)) as server, http_session() as http:
        url = server.room_url("game-2")
        async with (
            connect(url, client="p1") as p1,
            connect(url, client="p2") as p2,
        ):
            await p1.act("join", None)
            seq = await p2.act("join", None)
            assert seq is not None
            await p1.act("draw", 1)
            async with connect(url, role="spectator") as watcher:
                await p1.wait_for_seq(seq)
                assert p1.state["hands"] == {"p1": ["CARD-p1", "CARD-p1-1"]}
                await eventually(lambda: "p2" in p2.state["hands"])
                assert set(p2.state["hands"]) == {"p2"}
                assert "hands" not in watcher.state and set(watcher.state["players"]) == {
                    "p1",
                    "p2",
                }
            # A client that does not speak views cannot join a room with private parts.
            async with bare(url) as c:
                await c.send([1, {"v": 1, "role": "spectator"}])
                assert await c.closed() == 4003
            # HTTP readers see no hand (no token: nobody's).
            body = await state_of(http, server.http_url, "game-2")
            assert "hands" not in body["state"]


async def test_changing_the_view_sends_what_shows_and_what_stops_at_once() -> None:
    async with running_server(room_types=(SPEC,)) as server, http_session() as http:
        url = server.room_url("game-3")
        await play(url, ["p1", "p2"], 2)
        async with bare(url) as raw:
            await raw.hello("spectator", view=[["players", "p1"]])
            snapshot = await raw.recv()
            assert snapshot[3] == {"players": {"p1": {"hp": 1, "note": "SECRET-p1"}}}
            await raw.send([11, [["board"]]])
            viewed = await raw.recv()
            whole = (await state_of(http, server.http_url, "game-3"))["state"]
            assert viewed[0] == 12 and viewed[1] == snapshot[2] and viewed[2] == [["board"]]
            # The old part removed, the new one with its values now: no waiting for a change.
            assert viewed[3] == [[1, ["players"]], [0, ["board"], whole["board"]]]
            # Malformed: 1007; beyond what may be seen (a spectator and hands): shown as cut.
            await raw.send([11, [["board", 1]]])
            assert await raw.closed() == 1007
        async with connect(url, role="spectator", view=[["players"]]) as watcher:
            assert set(watcher.state) == {"players"}
            await watcher.set_view([["board"]])
            await eventually(lambda: set(watcher.state) == {"board"})
            assert watcher.state == {"board": whole["board"]}


async def test_resume_with_a_view_after_a_cut_gets_the_views_net_change() -> None:
    view = [["board"], ["players", "p1"]]
    async with running_server(room_types=(SPEC,)) as server:
        url = server.room_url("game-4")
        await play(url, ["p1", "p2"], 8)
        async with bare(url) as raw:
            welcome = await raw.hello("spectator", view=view)
            snapshot = await raw.recv()
            epoch, seq = snapshot[1], snapshot[2]
        await play(url, ["p1", "p2"], 1)  # two more cells, p1's hp, p2's hand
        async with bare(url) as raw:
            welcome = await raw.hello("spectator", view=view, resume=[epoch, seq])
            assert welcome["sync"] == "patch", welcome
            patch = await raw.recv()
            assert patch[:4] == [9, epoch, seq, welcome["seq"]]
            assert all(
                op[1][0] == "board" or op[1][:2] == ["players", "p1"] or op[1] == ["players"]
                for op in patch[4]
            )
            assert b"SECRET-p2" not in msgpack.packb(patch)
        # Unchanged view: the resume is current at the head, nothing to send.
        async with bare(url) as raw:
            head = welcome["seq"]
            again = await raw.hello("spectator", view=view, resume=[epoch, head])
            assert again["sync"] == "current"


async def test_a_view_survives_a_cut_with_the_python_client() -> None:
    view = [["board"], ["players", "p1"]]
    async with running_server(room_types=(SPEC,)) as server, http_session() as http:
        url = server.room_url("game-5")
        await play(url, ["p1", "p2"], 1)
        proxy = FaultProxy(int(server.ws_url.rsplit(":", 1)[1]), seed=5)
        proxy.calm()
        await proxy.start()
        try:
            async with connect(proxy.url("game-5"), role="spectator", view=view) as watcher:
                await proxy.stop()
                await play(url, ["p1", "p2"], 3)
                await proxy.start()
                head = (await state_of(http, server.http_url, "game-5"))["seq"]
                await watcher.wait_for_seq(head)
                whole = (await state_of(http, server.http_url, "game-5"))["state"]
                assert watcher.state == view_of(whole, from_prefixes(view))
        finally:
            await proxy.stop()


@contextlib.asynccontextmanager
async def dropping_proxy(upstream: str) -> AsyncIterator[tuple[str, list[Any], list[Any]]]:
    """A WebSocket proxy that drops the first server frame holding a VIEW_DIFF; yields its
    URL prefix, the frames dropped and the client's messages it forwarded."""
    dropped: list[Any] = []
    sent: list[Any] = []

    async def handler(conn: Any) -> None:
        path = conn.request.path
        async with websockets.connect(upstream + path, compression=None) as up:

            async def down() -> None:
                async for frame in up:
                    messages = unpack(frame)
                    if not dropped and any(m[0] == 10 for m in messages):
                        dropped.append(messages)
                        continue
                    await conn.send(frame)

            async def upward() -> None:
                async for frame in conn:
                    sent.extend(unpack(frame))
                    await up.send(frame)

            tasks = [asyncio.create_task(down()), asyncio.create_task(upward())]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}", dropped, sent


async def test_a_lost_view_diff_is_noticed_and_resynced() -> None:
    view = [["board"]]
    async with (
        running_server(room_types=(SPEC,)) as server,
        http_session() as http,
        dropping_proxy(server.ws_url) as (proxy, dropped, sent),
    ):
        url = server.room_url("game-6")
        await play(url, ["p1"], 1)
        async with connect(f"{proxy}/rooms/game-6", role="spectator", view=view) as watcher:
            await play(url, ["p1", "p2"], 2)
            whole = (await state_of(http, server.http_url, "game-6"))["state"]
            # The board last changed before the head: the client's seq stays there.
            await eventually(lambda: watcher.state == {"board": whole["board"]})
        assert dropped, "the proxy dropped a VIEW_DIFF"
        assert any(m[0] == 6 for m in sent), "the client asked with RESYNC"


async def test_a_token_view_holds_on_every_way_out() -> None:
    """A token limited to ["players", "p7"]: not a byte of p8's data through WebSocket
    (live, snapshot, resume) or HTTP (state, head, changes); asking for more is refused."""
    token = mint(
        SECRET, sub="p7", role="agent", rooms=["game-*"], ttl=600, view=[["players", "p7"]]
    )
    writer = mint(SECRET, sub="p8", role="agent", rooms=["game-*"], ttl=600)
    auth = {"Authorization": f"Bearer {token}"}
    seen = bytearray()
    async with (
        running_server(room_types=(SPEC,), auth="jwt", jwt_secret=SECRET) as server,
        http_session() as http,
    ):
        url, base = server.room_url("game-7"), server.http_url
        async with connect(url, token=writer) as p8, connect(url, token=token) as p7:
            await p8.act("join", None)
            await p7.act("join", None)
            async with bare(url) as raw:
                welcome = await raw.hello("spectator", token=token, view=True)
                seen += msgpack.packb(welcome)
                seen += msgpack.packb(await raw.recv())  # the view's SNAPSHOT
                epoch = p7.epoch
                resume_at = welcome["seq"]
                await p8.act("move", "x")
                seq = await p7.act("move", "y")
                await p8.act("wipe", ["p7", "p8"])
                with contextlib.suppress(TimeoutError):
                    while True:
                        seen += msgpack.packb(await raw.recv(timeout=0.5))
                # Asking for more on the live connection: ERROR forbidden, nothing changes.
                await raw.send([11, [["players"]]])
                refused = await raw.recv_type(8)
                assert refused[1] is None and refused[2] == "forbidden"
            assert seq is not None and p7.state == {"players": {"p7": p7.state["players"]["p7"]}}
            async with bare(url) as raw:  # resume: the view's net change
                welcome = await raw.hello("spectator", token=token, view=True, resume=[epoch, 1])
                seen += msgpack.packb(welcome) + msgpack.packb(await raw.recv())
            async with bare(url) as raw:  # asking for more at HELLO: 4003
                await raw.send(
                    [1, {"v": 1, "role": "agent", "token": token, "view": [["players"]]}]
                )
                assert await raw.closed() == 4003
            async with bare(url) as raw:  # a base client: 4003, told to use views
                await raw.send([1, {"v": 1, "role": "agent", "token": token}])
                assert await raw.closed() == 4003
            for path, query in (
                ("state", {}),
                ("state", {"view": json.dumps([["players", "p7", "hp"]])}),
                ("head", {}),
                ("changes", {"epoch": epoch, "since": "0", "compact": "1"}),
            ):
                async with http.get(f"{base}/rooms/game-7/{path}", params=query, headers=auth) as r:
                    assert r.status == 200, await r.text()
                    seen += await r.read()
            for path, query, status in (
                ("state", {"view": json.dumps([["players"]])}, 403),
                ("changes", {"epoch": epoch, "since": "0"}, 400),
                ("state", {"view": "[1]"}, 400),
            ):
                async with http.get(f"{base}/rooms/game-7/{path}", params=query, headers=auth) as r:
                    assert r.status == status, await r.text()
                    assert (await r.json())["code"] in ("forbidden", "invalid")
            async with http.get(f"{base}/rooms/game-7/clients/p8", headers=auth) as r:
                assert r.status == 403  # another agent's record says when it acted
            async with http.get(f"{base}/rooms/game-7/clients/p7", headers=auth) as r:
                assert r.status == 200 and (await r.json())["acked"] >= 2
            for path in ("/rooms/game-7", "/rooms"):  # presence names no other agent
                async with http.get(f"{base}{path}", headers=auth) as r:
                    assert r.status == 200, await r.text()
                    listed = await r.read()
                    assert b"p8" not in listed and b"agent_count" in listed
            whole = await state_of(http, base, "game-7", auth, view=json.dumps([["players", "p7"]]))
            assert set(whole["state"]["players"]) == {"p7"}
        assert b"SECRET-p7" in seen and resume_at >= 2
        for leak in (b"SECRET-p8", b"CARD-p8", b"board"):
            assert leak not in seen, leak


async def test_spectators_on_one_view_share_one_group_and_one_encoding() -> None:
    """Subscribers with the same view are one group: one cut and one VIEW_DIFF per batch."""
    async with running_server(room_types=(SPEC,)) as server:
        url = server.room_url("game-8")
        await make_room(server, "game-8")
        live = server.app.rooms.rooms["game-8"]
        async with contextlib.AsyncExitStack() as stack:
            for i in range(6):
                view = [["board"]] if i % 2 else [["players"]]
                await stack.enter_async_context(connect(url, role="spectator", view=view))
            await stack.enter_async_context(connect(url, role="spectator"))
            groups = live.feed.groups
            assert len(groups) == 3  # two views, and the room without hands
            assert sorted(len(g.members) for g in groups.values()) == [1, 3, 3]
            await play(url, ["p1"], 1)
            players = next(g for g in groups.values() if list(g.spec.children) == ["players"])
            board = next(g for g in groups.values() if list(g.spec.children) == ["board"])
            # "wipe" changed the players last; the board's group got nothing since "move".
            assert players.last == live.feed.head > board.last


VIEW = [["items", "i1"], ["items", "i7"]]


def view_state(state: dict[str, Any]) -> dict[str, Any]:
    return view_of(state, from_prefixes(VIEW))


async def test_resume_with_a_view_after_a_restart(tmp_path: Path) -> None:
    """The index is rebuilt from the store's log: the view's net change still answers."""
    store = f"sqlite:{tmp_path / 'v.db'}"
    async with running_server(store=store, action_rate=0) as server, http_session() as http:
        await fill(http, server.http_url, "r")
        before = await catchup_state(http, server.http_url, "r")
        await churn(http, server.http_url, "r", 2)
        after = await catchup_state(http, server.http_url, "r")
    async with (
        running_server(store=store, action_rate=0) as server,
        bare(server.room_url("r")) as raw,
    ):
        welcome = await raw.hello("spectator", view=VIEW, resume=[before["epoch"], before["seq"]])
        assert welcome["sync"] == "patch"
        patch = await raw.recv()
    copy_ = view_state(before["state"])
    apply_net_change(copy_, ops.parse_ops(patch[4]))
    assert copy_ == view_state(after["state"]) and "i7" not in copy_["items"]


async def test_a_follower_serves_a_view_and_keeps_it_through_a_failover(redis_url: str) -> None:
    async with (
        cluster(redis_url, 2, *CLUSTER_FLAGS) as (owner, follower),
        http_session() as http,
    ):
        await fill(http, owner.http_url, "f")
        before = await catchup_state(http, owner.http_url, "f")
        async with connect(follower.room_url("f"), role="spectator", view=VIEW) as watching:
            assert watching.state == view_state(before["state"])
            await churn(http, owner.http_url, "f", 2)
            after = await catchup_state(http, owner.http_url, "f")
            await eventually(lambda: watching.state == view_state(after["state"]), 20)
            # A resume with the view on the follower: its own copy and index answer.
            async with bare(follower.room_url("f")) as raw:
                welcome = await raw.hello(
                    "spectator", view=VIEW, resume=[before["epoch"], before["seq"]]
                )
                assert welcome["sync"] == "patch"
            # The owner dies; the follower takes the room over, and the view goes on.
            owner.signal(signal.SIGKILL)
            body = {"client": "late", "aid": 1, "name": "patch", "args": [[0, ["items", "i1"], 7]]}
            for _ in range(int(300 * SCALE)):  # 503/504 until the lease is taken over
                if (await follower.post("/rooms/f/actions", body))[0] == 200:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the follower never took the room over")
            await eventually(lambda: watching.state.get("items", {}).get("i1") == 7, 20)
            final = await catchup_state(http, follower.http_url, "f")
            assert watching.state == view_state(final["state"])


async def test_an_append_under_a_view_goes_as_one_op_not_the_whole_list() -> None:
    async with running_server() as server, http_session() as http:
        url = server.room_url("log")
        log = [{"n": i, "text": "an entry of the log"} for i in range(2000)]
        body = {"client": "w", "aid": 1, "name": "patch", "args": [[0, ["log"], log]]}
        async with http.post(f"{server.http_url}/rooms/log/actions", json=body) as resp:
            assert resp.status == 200
        async with bare(url) as raw:
            await raw.hello("spectator", view=[["log"]])
            await raw.recv()  # the view's SNAPSHOT
            body = {"client": "w", "aid": 2, "name": "patch", "args": [[2, ["log", -1], "new"]]}
            async with http.post(f"{server.http_url}/rooms/log/actions", json=body) as resp:
                assert resp.status == 200
            diff = await raw.recv_type(10)
            assert diff[3] == [[2, ["log", -1], "new"]]


async def test_view_changes_racing_a_resync_or_a_skip_ahead_end_on_the_view() -> None:
    """A RESYNC from before the connection's last VIEW_SET gets a SNAPSHOT (its copy took
    the VIEW_SET's ops while it waited); a VIEW while lagging is answered right before the
    SNAPSHOT that ends the lag, at the same seq; a resume whose view_tag names another view
    gets a SNAPSHOT."""
    async with running_server(room_types=(SPEC,)) as server:
        url = server.room_url("game-9")
        await play(url, ["p1", "p2"], 1)
        feed = server.app.rooms.rooms["game-9"].feed
        async with bare(url) as raw:
            welcome = await raw.hello("spectator", view=[["board"]])
            first = await raw.recv()
            await play(url, ["p1"], 1)
            await raw.send([11, [["players"]]])
            viewed = await raw.recv_type(12)
            assert viewed[1] > first[2] and viewed[4] != welcome["view_tag"]
            await raw.send([6, first[1], first[2]])  # from before the VIEW_SET
            answer = await raw.recv_type(3)
            assert set(answer[3]) == {"players"}
            # Lagging (skipped ahead by the server) when its VIEW is handled: the race is
            # set up in the server's own loop, where a VIEW from the wire would land.
            (sub,) = [s for s in feed.members if s.role == "spectator"]
            feed.skip_ahead(sub)
            board = effective([["board"]], None, feed.private, None)
            await feed.change_view(sub, board, [["board"]])
            lead = await raw.recv_type(12)
            snapshot = await raw.recv()
            assert snapshot[0] == 3 and lead[1] == snapshot[2] and lead[3] == []
            assert set(snapshot[3]) == {"board"}
            epoch, seq, tag = snapshot[1], snapshot[2], lead[4]
        async with bare(url) as raw:  # the same view and tag: current
            again = await raw.hello(
                "spectator", view=[["board"]], resume=[epoch, seq], view_tag=tag
            )
            assert again["sync"] == "current" and again["view_tag"] == tag
        async with bare(url) as raw:  # a copy of another view: a SNAPSHOT
            other = await raw.hello(
                "spectator", view=[["board"]], resume=[epoch, seq], view_tag="another-view"
            )
            assert other["sync"] == "snapshot"

"""Net-change catch-up (docs/protocol.md §5.11, §10.4): a client back after many diffs
gets one PATCH with what changed, not every diff and not the whole state."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgpack

from statecast import ActionContext, Changed, Room, Welcomed, action, connect
from statecast.protocol import ops
from statecast.protocol.netchange import apply_net_change
from tests.cluster_nodes import CLUSTER_FLAGS, cluster
from tests.faultproxy import FaultProxy
from tests.helpers import SCALE, RunningServer, bare, eventually, http_session, running_server

ITEMS = 300
BODY = {"owner": None, "status": "open", "n": 0, "title": "an item with a title"}


async def act(http: aiohttp.ClientSession, base: str, room: str, aid: int, patch: Any) -> int:
    body = {"client": "writer", "aid": aid, "name": "patch", "args": patch}
    async with http.post(f"{base}/rooms/{room}/actions", json=body) as resp:
        assert resp.status == 200, await resp.text()
        return int((await resp.json())["seq"])


async def state_of(http: aiohttp.ClientSession, base: str, room: str) -> dict[str, Any]:
    async with http.get(f"{base}/rooms/{room}/state") as resp:
        return dict(await resp.json())


async def fill(http: aiohttp.ClientSession, base: str, room: str) -> None:
    items = {f"i{k}": dict(BODY) for k in range(ITEMS)}
    await act(http, base, room, 1, [[0, ["items"], items]])


async def churn(http: aiohttp.ClientSession, base: str, room: str, first_aid: int) -> int:
    """200 diffs that change only ``n`` of 5 items, one of them deleted and one re-created."""
    for k in range(200):
        await act(http, base, room, first_aid + k, [[0, ["items", f"i{k % 5}", "n"], k]])
    await act(http, base, room, first_aid + 200, [[1, ["items", "i7"]]])
    return await act(http, base, room, first_aid + 201, [[0, ["items", "i9"], {"n": -1}]])


def patched(state: dict[str, Any], patch: list[Any]) -> dict[str, Any]:
    """A copy of ``state`` with the PATCH message's net change applied, as a client does."""
    client = copy.deepcopy(state)
    apply_net_change(client, ops.parse_ops(patch[4]))
    return client


@contextlib.asynccontextmanager
async def network(server: RunningServer, seed: int) -> AsyncIterator[FaultProxy]:
    """A proxy in front of the server that a test takes away (stop) and brings back (start,
    on the same port), so that a client is away while the room changes."""
    proxy = FaultProxy(int(server.ws_url.rsplit(":", 1)[1]), seed=seed)
    proxy.calm()
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


async def resume(url: str, epoch: str, seq: int, **extra: Any) -> tuple[dict[str, Any], Any]:
    """HELLO resuming from (epoch, seq) as a spectator; (WELCOME, the message after it)."""
    async with bare(url) as c:
        welcome = await c.hello("spectator", resume=[epoch, seq], **extra)
        after = await c.recv() if welcome["sync"] != "current" else None
        return welcome, after


async def test_a_resume_after_many_diffs_gets_one_patch_with_the_net_change() -> None:
    async with running_server(action_rate=0) as server, http_session() as http:
        base, url = server.http_url, server.room_url("big")
        await fill(http, base, "big")
        before = await state_of(http, base, "big")
        epoch, since = before["epoch"], before["seq"]
        head = await churn(http, base, "big", 2)
        after = await state_of(http, base, "big")
        welcome, patch = await resume(url, epoch, since, patch=True)
        assert welcome["sync"] == "patch" and welcome["seq"] == head
        assert patch[:4] == [9, epoch, since, head]
        assert patched(before["state"], patch) == after["state"]
        assert len(patch[4]) == 7  # i0..i4's n, i7 removed, i9 replaced: nothing more
        patch_bytes = len(msgpack.packb(patch))
        snapshot_bytes = len(msgpack.packb([3, epoch, head, after["state"]]))
        assert patch_bytes * 10 < snapshot_bytes
        # A client that did not ask gets what the base contract knows: never a PATCH.
        welcome, message = await resume(url, epoch, since)
        assert welcome["sync"] in ("snapshot", "replay") and message[0] in (3, 5)
        # Another epoch: a SNAPSHOT, as ever.
        welcome, message = await resume(url, "another-epoch", since, patch=True)
        assert welcome["sync"] == "snapshot" and message[0] == 3


async def test_http_compact_changes_are_the_net_change_and_410_past_the_horizon() -> None:
    async with (
        running_server(tombstone_horizon=50, action_rate=0) as server,
        http_session() as http,
    ):
        base = server.http_url
        await fill(http, base, "h")
        before = await state_of(http, base, "h")
        epoch, since = before["epoch"], before["seq"]
        await churn(http, base, "h", 2)
        after = await state_of(http, base, "h")
        query = f"epoch={epoch}&compact=1"
        async with http.get(f"{base}/rooms/h/changes?{query}&since={after['seq'] - 3}") as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body["to"] == after["seq"] and body["from"] == after["seq"] - 3
        assert body["horizon"] > since  # 50 diffs kept at least, 100 at most
        async with http.get(f"{base}/rooms/h/changes?{query}&since={since}") as resp:
            assert resp.status == 410 and (await resp.json())["code"] == "gone"
        inside = body["horizon"]
        async with http.get(f"{base}/rooms/h/changes?{query}&since={inside}") as resp:
            net = (await resp.json())["ops"]
        async with bare(server.room_url("h")) as c:  # the state at `inside`, by replay
            await c.hello("spectator", resume=[epoch, inside])
            replayed = await c.recv()
        assert replayed[0] == 5  # history holds these diffs: a replay from `inside` on
        assert net and all(op[0] in (0, 1) for op in net)


async def test_the_python_client_catches_up_by_patch_after_being_away() -> None:
    """The shipped client asks for PATCH, applies it, and reports it as one Changed."""
    async with running_server(action_rate=0) as server, http_session() as http:
        base = server.http_url
        await fill(http, base, "away")
        async with (
            network(server, seed=1) as proxy,
            connect(proxy.url("away"), role="spectator") as spectator,
        ):
            events = spectator.changes()
            await proxy.stop()  # the network goes: the client reconnects, and is refused
            head = await churn(http, base, "away", 2)
            await proxy.start()  # the same port again
            await eventually(lambda: spectator.seq == head, 20)
            assert spectator.state == (await state_of(http, base, "away"))["state"]
            seen = []
            async for event in events:
                seen.append(event)
                if isinstance(event, Changed) and event.seq == head:
                    break
            welcomes = [e for e in seen if isinstance(e, Welcomed)]
            assert welcomes and welcomes[-1].welcome.sync == "patch"
            assert [e for e in seen if isinstance(e, Changed)] == [seen[-1]]  # one event
            assert len(seen[-1].ops) == 7


async def test_a_restarted_server_still_answers_with_the_net_change(tmp_path: Path) -> None:
    store = f"sqlite:{tmp_path / 'c.db'}"
    async with running_server(store=store, action_rate=0) as server, http_session() as http:
        await fill(http, server.http_url, "r")
        before = await state_of(http, server.http_url, "r")
        await churn(http, server.http_url, "r", 2)
        after = await state_of(http, server.http_url, "r")
    async with running_server(store=store, action_rate=0) as server:
        welcome, patch = await resume(
            server.room_url("r"), before["epoch"], before["seq"], patch=True
        )
    assert welcome["sync"] == "patch"
    assert patched(before["state"], patch) == after["state"]


async def test_a_follower_answers_a_resume_with_the_net_change(redis_url: str) -> None:
    async with (
        cluster(redis_url, 2, *CLUSTER_FLAGS) as (owner, follower),
        http_session() as http,
    ):
        await fill(http, owner.http_url, "f")
        async with connect(follower.room_url("f"), role="spectator") as watching:
            before = await state_of(http, owner.http_url, "f")
            head = await churn(http, owner.http_url, "f", 2)
            await eventually(lambda: watching.seq == head, 20)
        welcome, patch = await resume(
            follower.room_url("f"), before["epoch"], before["seq"], patch=True
        )
        assert welcome["sync"] == "patch"
        assert (
            patched(before["state"], patch)
            == (await state_of(http, follower.http_url, "f"))["state"]
        )
        # The owner dies: the follower takes the room over in the same epoch, and still
        # answers a resume from before with the net change, now including a diff of its own.
        owner.signal(signal.SIGKILL)
        body = {"client": "late", "aid": 1, "name": "patch", "args": [[0, ["items", "i1"], 1]]}
        for _ in range(int(300 * SCALE)):  # 503/504 until the lease is taken over
            if (await follower.post("/rooms/f/actions", body))[0] == 200:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the follower never took the room over")
        welcome, patch = await resume(
            follower.room_url("f"), before["epoch"], before["seq"], patch=True
        )
        assert welcome["sync"] == "patch" and welcome["seq"] == head + 1
        assert (
            patched(before["state"], patch)
            == (await state_of(http, follower.http_url, "f"))["state"]
        )


async def test_a_client_that_must_see_every_change_can_refuse_the_net_change() -> None:
    """connect(net_change=False): back after the same absence, every diff (a replay)."""
    async with running_server(action_rate=0) as server, http_session() as http:
        base = server.http_url
        await fill(http, base, "every")
        async with (
            network(server, seed=2) as proxy,
            connect(proxy.url("every"), role="spectator", net_change=False) as watcher,
        ):
            events = watcher.changes()
            await proxy.stop()
            head = await churn(http, base, "every", 2)
            await proxy.start()
            seqs = []
            async for event in events:
                if isinstance(event, Welcomed):
                    assert event.welcome.sync in ("replay", "snapshot")
                if isinstance(event, Changed):
                    seqs.append(event.seq)
                    if event.seq == head:
                        break
            assert seqs == list(range(seqs[0], head + 1)) and len(seqs) > 100


class Board(Room):
    """A room type whose catch-up entries are whole items (``catchup_depth = 2``)."""

    catchup_depth = 2

    @action("bump")
    def bump(self, ctx: ActionContext, args: Any) -> None:
        ctx.set(["items", args, "n"], ctx.state["items"][args]["n"] + 1)

    @action("fill")
    def fill(self, ctx: ActionContext, args: Any) -> None:
        ctx.set(["items"], {f"i{k}": dict(BODY) for k in range(ITEMS)})


async def test_a_room_type_chooses_how_deep_its_entries_go() -> None:
    spec = f"board-*={__name__}:Board"
    async with running_server(room_types=(spec,), action_rate=0) as server:
        async with bare(server.room_url("board-1")) as agent:
            await agent.hello(client="a")
            await agent.recv_type(3)
            await agent.send([4, 1, "fill", None])
            before = (await agent.recv_type(7))[2]
            for aid in range(2, 52):
                await agent.send([4, aid, "bump", f"i{aid % 3}"])
                await agent.recv_type(7)
            async with http_session() as http:
                head = await state_of(http, server.http_url, "board-1")
        welcome, patch = await resume(server.room_url("board-1"), head["epoch"], before, patch=True)
        assert welcome["sync"] == "patch"
        assert sorted(op[1] for op in patch[4]) == [["items", f"i{k}"] for k in range(3)]
        assert all(op[2] == head["state"]["items"][op[1][1]] for op in patch[4])

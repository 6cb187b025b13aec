"""The JS client and the watch page in a real Chromium against a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import copy
import itertools
import random
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Page

from statecast import connect
from statecast.protocol import ops
from statecast.protocol.errors import Rejection
from statecast.server.fanout import Subscriber
from tests.browser.conftest import ARTIFACTS
from tests.faultproxy import FaultPlan, FaultProxy
from tests.helpers import TIMEOUT, RunningServer, bare, http_session, running_server
from tests.server.test_auth import SECRET, token

pytestmark = pytest.mark.asyncio(loop_scope="module")

GRID = "grid-*=statecast.server.rooms.grid:GridRoom"
FAST = {"action_rate": 100_000.0, "action_burst": 100_000}
MS = TIMEOUT * 1000


async def watch(page: Page, srv: RunningServer, room: str, fragment: str = "") -> None:
    """Open the watch page and wait until it is live."""
    await page.goto(f"{srv.http_url}/rooms/{room}/watch{fragment}")
    await until(page, "window.statecastWatch?.room?.status === 'live'")


async def until(page: Page, expression: str, arg: Any = None) -> None:
    await page.wait_for_function(expression, arg=arg, timeout=MS, polling=20)


async def page_room(page: Page) -> dict[str, Any]:
    """What the page's client holds: its state, epoch, seq, sync kind and counters."""
    result: dict[str, Any] = await page.evaluate(
        """() => {
            const w = window.statecastWatch, r = w.room;
            return {state: r.state, epoch: r.epoch, seq: r.seq, sync: r.lastSync,
                    stats: r.stats, applied: w.applied, snapshots: w.snapshots};
        }"""
    )
    return result


async def http_json(url: str) -> Any:
    async with http_session() as http, http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


def spectators(srv: RunningServer, room: str) -> list[Subscriber]:
    return [s for s in srv.app.rooms.rooms[room].feed.members if s.role == "spectator"]


def random_patches(rng: random.Random, count: int) -> list[list[Any]]:
    """``count`` patches that each apply to the state the ones before them left."""
    state: dict[str, Any] = {}
    patches: list[list[Any]] = []
    values = [0, -7, 2**53 - 1, 1.5, "text", "ünï", True, None, [1, "a"], {"x": {"y": [2]}}]
    while len(patches) < count:
        kind = rng.random()
        key = f"k{rng.randrange(8)}"
        items = state.get("list")
        if kind < 0.4:
            patch = [[0, [key], rng.choice(values)]]
        elif kind < 0.55:
            patch = [[0, ["nested", key, "v"], rng.choice(values)], [0, ["n"], len(patches)]]
        elif kind < 0.75:
            index = rng.randrange(len(items) + 1) if isinstance(items, list) else 0
            patch = [[2, ["list", index], rng.choice(values)]] if items is not None else []
            patch = patch or [[0, ["list"], []]]
        elif kind < 0.85 and isinstance(items, list) and items:
            patch = [[1, ["list", rng.randrange(len(items))]]]
        else:
            patch = [[1, [key]]]
        trial = copy.deepcopy(state)
        try:
            ops.apply_wire_ops(trial, patch)
        except Rejection:
            continue
        state = trial
        patches.append(patch)
    return patches


@pytest_asyncio.fixture(loop_scope="module")
async def server() -> AsyncIterator[RunningServer]:
    async with running_server(room_types=(GRID,), **FAST) as srv:
        yield srv


async def test_page_state_equals_the_server_after_random_patches(
    page: Page, server: RunningServer
) -> None:
    """After 300 random patches from a Python agent the page holds exactly GET /state,
    and the room list shows the room with its head and its spectator."""
    async with connect(server.room_url("doc"), client="writer") as agent:
        await agent.act("patch", [[0, ["started"], True]])
        await watch(page, server, "doc")
        for patch in random_patches(random.Random(8), 300):
            await agent.act("patch", patch)
        body = await http_json(f"{server.http_url}/rooms/doc/state")
        await until(page, "seq => window.statecastWatch.room.seq === seq", body["seq"])
        held = await page_room(page)
        assert held["state"] == body["state"] and held["epoch"] == body["epoch"]
        assert held["stats"]["duplicates"] == 0 and held["stats"]["gaps"] == 0

        listing = await page.context.new_page()
        await listing.goto(f"{server.http_url}/")
        row = listing.locator('tr[data-room="doc"]')
        await row.wait_for(timeout=MS)
        cells = await row.locator("td").all_inner_texts()
        assert cells[0] == "doc" and cells[1] == "DocumentRoom" and cells[3] == str(body["seq"])
        assert cells[4].startswith("1: writer") and cells[5] == "1"
        await listing.locator('a:text-is("doc")').click()
        await listing.wait_for_url(re.compile(r"/rooms/doc/watch$"), timeout=MS)
        await until(listing, "window.statecastWatch?.room?.status === 'live'")


async def test_a_dropped_page_resumes_by_replay_without_gap_or_duplicate(
    page: Page, server: RunningServer
) -> None:
    """The server drops the page's connection mid-stream; the page comes back by replay
    (its sync kind and the server's statecast_syncs{sync="replay"}), no gap, no duplicate."""
    async with connect(server.room_url("stream"), client="writer") as agent:
        await agent.act("patch", [[0, ["blob"], "x" * 50_000], [0, ["tail"], []]])
        await watch(page, server, "stream", "#netchange=0")  # every diff: a replay
        before = await page_room(page)
        stop = asyncio.Event()

        async def stream() -> None:  # a few hundred diffs a second, until told to stop
            for n in range(10_000):
                if stop.is_set():
                    return
                await agent.act("patch", [[0, ["n"], n], [2, ["tail", -1], n]])
                await asyncio.sleep(0.002)

        writer = asyncio.create_task(stream())
        try:
            await until(page, "window.statecastWatch.room.seq >= 50")
            (victim,) = spectators(server, "stream")
            victim.conn.transport.abort()  # the server side goes away, as a crash would
            for i in range(3):  # and the room moves on while the page is away
                await agent.act("patch", [[0, ["away"], i]])
            await until(page, "window.statecastWatch.room.reconnects === 1")
            await until(page, "window.statecastWatch.room.status === 'live'")
            resumed_at = await page.evaluate("window.statecastWatch.room.seq")
            await until(page, "s => window.statecastWatch.room.seq >= s", resumed_at + 20)
        finally:
            stop.set()
            await writer
        head = (await http_json(f"{server.http_url}/rooms/stream/head"))["seq"]
        await until(page, "seq => window.statecastWatch.room.seq === seq", head)
        held = await page_room(page)
        assert held["sync"] == "replay"
        assert held["snapshots"] == before["snapshots"] == 1  # one SNAPSHOT, at the first join
        applied = held["applied"]  # every seq after it, each once, in order: no gap, no duplicate
        assert applied["breaks"] == 0 and applied["to"] == head
        assert applied["count"] == head - applied["from"]
        assert held["stats"]["duplicates"] == 0 and held["stats"]["gaps"] == 0
        assert held["state"] == (await http_json(f"{server.http_url}/rooms/stream/state"))["state"]
        async with http_session() as http, http.get(f"{server.http_url}/metrics") as resp:
            metrics = await resp.text()
        assert re.search(r'^statecast_syncs_total\{sync="replay"\} [1-9]', metrics, re.M), metrics


async def test_a_page_back_after_many_diffs_catches_up_by_the_net_change(
    page: Page, server: RunningServer
) -> None:
    """By default the page asks for PATCH: back after 50 diffs to one key, it gets one
    PATCH (shown as its sync kind) and the server's state."""
    async with connect(server.room_url("net"), client="writer") as agent:
        await agent.act("patch", [[0, ["blob"], "x" * 5_000], [0, ["n"], 0]])
        await watch(page, server, "net")
        (victim,) = spectators(server, "net")
        victim.conn.transport.abort()
        for n in range(1, 51):
            await agent.act("patch", [[0, ["n"], n]])
        head = (await http_json(f"{server.http_url}/rooms/net/head"))["seq"]
        await until(page, "seq => window.statecastWatch.room.seq === seq", head)
        held = await page_room(page)
        assert held["sync"] == "patch" and held["state"]["n"] == 50
        assert await page.locator("#sync").inner_text() == "patch"
        assert held["state"] == (await http_json(f"{server.http_url}/rooms/net/state"))["state"]


CLIENT = """async ({url, script}) => {
    const sc = await import("/static/statecast.js");
    return await (new Function("sc", "url", `return (async () => { ${script} })()`))(sc, url);
}"""


async def run_client(page: Page, srv: RunningServer, room: str, script: str) -> Any:
    """Run ``script`` in the page with ``sc`` (statecast.js) and ``url`` (the room's)."""
    if page.url == "about:blank":
        await page.goto(f"{srv.http_url}/")
    return await page.evaluate(CLIENT, {"url": srv.room_url(room), "script": script})


async def test_act_resolves_rejects_and_survives_a_drop_exactly_once(
    page: Page, server: RunningServer
) -> None:
    """act() resolves with a seq, rejects with the ERROR code, and actions pending across a
    forced drop take effect exactly once."""
    result = await run_client(
        page,
        server,
        "acts",
        """
        const room = sc.connect(url, {role: "agent"});
        await room.ready;
        const seq = await room.act("patch", [[0, ["list"], []]]);
        const codes = [];
        for (const [name, args] of [["patch", [[1, ["missing"]]]], ["nope", null]]) {
            try { await room.act(name, args); codes.push("resolved"); }
            catch (err) { codes.push(err.code); }
        }
        const pending = [];
        for (let i = 0; i < 20; i++) pending.push(room.act("patch", [[2, ["list", -1], i]]));
        room.drop();  // before any ACK can arrive
        const outcomes = await Promise.all(pending);
        const client = room.client;
        room.close();
        return {seq, codes, outcomes, reconnects: room.reconnects, client};
        """,
    )
    assert result["seq"] == 1
    assert result["codes"] == ["invalid", "unknown_action"]
    assert result["reconnects"] == 1
    assert all(o is None or isinstance(o, int) for o in result["outcomes"])
    body = await http_json(f"{server.http_url}/rooms/acts/state")
    assert body["state"]["list"] == list(range(20))
    acked = await http_json(f"{server.http_url}/rooms/acts/clients/{result['client']}")
    assert acked["acked"] == 23


async def test_spectators_cannot_act_and_a_token_for_another_room_is_refused(page: Page) -> None:
    """A spectator's act() and a raw ACTION are refused with forbidden; a page whose token
    grants another room is closed with 4003 and says so; the list shows granted rooms only."""
    async with running_server(auth="jwt", jwt_secret=SECRET) as srv:
        for room in ("game-1", "lobby"):
            async with bare(srv.room_url(room)) as ws:
                await ws.hello("agent", token=token(rooms=["*"]))
        spectator = token(role="spectator", rooms=["game-*"])
        await page.goto(f"{srv.http_url}/")
        result = await page.evaluate(
            """async ({url, tok}) => {
                const sc = await import("/static/statecast.js");
                const {encode, decodeMulti} = await import("/static/vendor/msgpack/index.mjs");
                const room = sc.connect(url, {role: "spectator", token: tok});
                await room.ready;
                let code = null;
                try { await room.act("patch", [[0, ["x"], 1]]); } catch (err) { code = err.code; }
                room.close();
                const raw = await new Promise((resolve, reject) => {
                    const ws = new WebSocket(url);
                    ws.binaryType = "arraybuffer";
                    const got = [];
                    ws.onopen = () => ws.send(encode([1, {v: 1, role: "spectator", token: tok}]));
                    ws.onmessage = (ev) => {
                        for (const m of decodeMulti(new Uint8Array(ev.data))) {
                            got.push(m);
                            if (m[0] === 3) ws.send(encode([4, 1, "patch", [[0, ["x"], 1]]]));
                            if (m[0] === 8) { ws.close(); resolve(m); }
                        }
                    };
                    ws.onerror = () => reject(new Error("socket failed"));
                });
                return {code, raw};
            }""",
            {"url": srv.room_url("game-1"), "tok": spectator},
        )
        assert result["code"] == "forbidden"
        assert result["raw"][:3] == [8, 1, "forbidden"]
        state = await http_json_auth(srv, "game-1", spectator)
        assert "x" not in state["state"]

        await page.goto(f"{srv.http_url}/rooms/lobby/watch#token={spectator}")
        await until(page, "window.statecastWatch?.room?.status === 'closed'")
        assert await page.evaluate("window.statecastWatch.room.closeCode") == 4003
        assert "4003" in await page.locator("#notice").inner_text()

        await page.goto(f"{srv.http_url}/#token={spectator}")
        await page.locator('tr[data-room="game-1"]').wait_for(timeout=MS)
        assert await page.locator("tr[data-room]").count() == 1


async def http_json_auth(srv: RunningServer, room: str, tok: str) -> Any:
    headers = {"Authorization": f"Bearer {tok}"}
    url = f"{srv.http_url}/rooms/{room}/state"
    async with http_session() as http, http.get(url, headers=headers) as resp:
        return await resp.json()


async def test_a_busy_room_keeps_the_frame_rate(page: Page, server: RunningServer) -> None:
    """At about 1,000 diffs/s (4,000 ops/s over 50 paths) the page keeps drawing frames,
    renders at most once per frame, redraws only the changed paths (never the whole tree
    but after a SNAPSHOT), keeps its measure at a fixed size, and ends on the server's head;
    a screenshot is saved."""
    async with bare(server.room_url("busy")) as agent:
        await agent.hello("agent", client="busy")
        await agent.send(
            [4, 1, "patch", [[0, ["players"], {f"p{i}": {"hp": 0} for i in range(50)}]]]
        )
        await agent.recv_type(7)
        await watch(page, server, "busy")
        # The SNAPSHOT is counted on arrival and drawn in the next animation frame, by a
        # callback queued before this one: start measuring once that frame has run.
        await page.evaluate("() => new Promise((done) => requestAnimationFrame(done))")
        measured = """() => {
            const w = window.statecastWatch;
            return {f: w.frames, r: w.renders, full: w.fullRenders, snapshots: w.snapshots,
                    stats: w.room.stats, size: JSON.stringify({...w, room: null}).length};
        }"""
        start = await page.evaluate(measured)
        frames: list[int] = []
        aid = 1
        loop = asyncio.get_running_loop()
        began = loop.time()
        for tick in range(200):  # 10 patches every 10 ms for 2 s: 1,000 diffs/s
            frame = []
            for _ in range(10):
                aid += 1
                patch = [[0, ["players", f"p{(aid * 4 + j) % 50}", "hp"], aid] for j in range(4)]
                frame.append([4, aid, "patch", patch])
            await agent.send(*frame)
            if tick % 20 == 19:  # the animation-frame counter, ten times over the run
                frames.append(await page.evaluate("window.statecastWatch.frames"))
            await asyncio.sleep(max(0.0, began + (tick + 1) * 0.01 - loop.time()))
        await until(page, "seq => window.statecastWatch.room.seq === seq", aid)
        end = await page.evaluate(measured)
        diffs = end["stats"]["diffs"]
        renders = end["r"] - start["r"]
        assert diffs == aid - 1
        assert renders <= end["f"] - start["f"]  # at most one render per animation frame
        assert renders < diffs / 3  # coalesced: many diffs per render
        # The tab kept drawing frames throughout: its frame counter moved between every
        # two samples (how many frames a loaded machine draws is a benchmark's business).
        assert all(later > earlier for earlier, later in itertools.pairwise(frames)), frames
        # The same 50 paths change over and over: each frame redraws those, not the tree.
        assert end["full"] - start["full"] <= end["snapshots"] - start["snapshots"]
        assert end["size"] < start["size"] + 40  # 2,000 diffs later, no record that grows
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "watch-busy.png"))


async def test_a_grid_room_is_drawn_as_a_board(page: Page, server: RunningServer) -> None:
    """Agents of a grid room appear on the board at their cells and move with their diffs;
    the page's drop button drops its connection and the page comes back by itself."""
    async with (
        connect(server.room_url("grid-demo"), client="ada") as ada,
        connect(server.room_url("grid-demo"), client="bob") as bob,
    ):
        await ada.act("join", {"x": 2, "y": 3})
        await bob.act("join", {"x": 9, "y": 9})
        await watch(page, server, "grid-demo")
        await until(page, "document.querySelectorAll('.board .cell').length === 256")
        for step in ("e", "e", "s"):
            await ada.act("move", step)
        await bob.act("move", "n")
        cell = page.locator('.board .cell[title^="ada "]')
        await until(
            page, "document.querySelector('.board .cell[title^=\"ada \"]')?.title === 'ada (4, 4)'"
        )
        assert await cell.inner_text() == "ad"
        assert await page.locator('.board .cell[title="bob (9, 8)"]').count() == 1
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "watch-grid.png"))
        state = (await http_json(f"{server.http_url}/rooms/grid-demo/state"))["state"]
        assert (await page_room(page))["state"] == state
        await page.click("#drop")  # the page's own button: the client comes back by itself
        await ada.act("move", "n")
        await until(page, "window.statecastWatch.room.reconnects === 1")
        await page.locator('.board .cell[title="ada (4, 3)"]').wait_for(timeout=MS)
        assert await page.locator("#reconnects").inner_text() == "1"
        assert await page.locator("#sync").inner_text() in ("replay", "current")


async def test_a_duplicated_tab_claims_an_agent_id_of_its_own(
    page: Page, server: RunningServer
) -> None:
    """A tab opened from another copies its sessionStorage, stored agent id included; the
    id is claimed per tab, so the second tab mints its own and both act without a 4009.
    A reload keeps the tab's id; an id taken by another connection ends in taken_over."""
    await page.goto(f"{server.http_url}/")
    start = """async (url) => {
        const sc = await import("/static/statecast.js");
        const room = (window.agent = sc.connect(url, {role: "agent"}));
        await room.ready;
        return {client: room.client, seq: await room.act("patch", [[0, [room.client], 1]])};
    }"""
    url = server.room_url("tabs")
    first = await page.evaluate(start, url)
    async with page.context.expect_page() as opened:
        await page.evaluate("window.open(location.href)")
    second_tab = await opened.value
    await second_tab.wait_for_load_state()
    copied = await second_tab.evaluate(
        "url => sessionStorage.getItem(`statecast:client:${url}`)", url
    )
    assert copied == first["client"]  # the precondition: the id came along with the copy
    second = await second_tab.evaluate(start, url)
    assert second["client"] != first["client"]
    acted = """async () => ({seq: await window.agent.act("patch", [[0, ["n"], 1]]),
        status: window.agent.status, code: window.agent.closeCode})"""
    for tab in (page, second_tab):
        after = await tab.evaluate(acted)
        assert after["status"] == "live" and after["code"] is None, after

    await second_tab.reload()  # a reload resumes as the same agent
    again = await second_tab.evaluate(start, url)
    assert again["client"] == second["client"]

    async with bare(url) as thief:  # another connection takes the first tab's id
        await thief.hello("agent", client=first["client"])
        await until(page, "window.agent.status === 'closed'")
        code = await page.evaluate(
            "window.agent.act('patch', []).then(() => 'resolved', (err) => err.code)"
        )
        assert code == "taken_over"
    state = (await http_json(f"{server.http_url}/rooms/tabs/state"))["state"]
    assert state[first["client"]] == state[second["client"]] == 1


async def test_a_page_whose_socket_went_dead_comes_back_when_the_network_does(
    page: Page, server: RunningServer
) -> None:
    """A network change can leave the page's socket open but dead (nothing arrives; the
    browser only notices when TCP gives up, minutes later). When the browser goes back
    online the page replaces that socket at once and catches up by replay."""
    plan = FaultPlan(cut_probability=0, delay_probability=0, stall_probability=1.0)
    plan.stall_seconds = (10 * TIMEOUT, 10 * TIMEOUT)
    async with (
        FaultProxy(int(server.ws_url.rsplit(":", 1)[1]), seed=4, plan=plan) as proxy,
        connect(server.room_url("netchange"), client="writer") as agent,
    ):
        proxy.calm()
        await agent.act("patch", [[0, ["n"], 0], [0, ["blob"], "x" * 5000]])
        await watch(page, server, "netchange", f"#ws={proxy.url('netchange')}&netchange=0")
        proxy.faults = True  # the page's connection goes dead: what it carries next stalls
        for n in range(1, 6):
            await agent.act("patch", [[0, ["n"], n]])
        proxy.calm()  # new connections get through
        await page.context.set_offline(True)
        await page.context.set_offline(False)
        head = (await http_json(f"{server.http_url}/rooms/netchange/head"))["seq"]
        await until(page, "seq => window.statecastWatch.room.seq === seq", head)
        held = await page_room(page)
        assert held["stats"]["reconnects"] == 1 and held["sync"] == "replay"
        assert held["applied"]["breaks"] == 0 and held["state"]["n"] == 5


async def test_keys_like_proto_are_watched_not_a_reconnect_loop(
    page: Page, server: RunningServer
) -> None:
    """State keys are any strings: an agent's "__proto__" and "constructor" keys (in the
    SNAPSHOT and in later DIFFs) are drawn, the page stays live on one connection, and
    nothing reaches Object.prototype."""
    async with connect(server.room_url("proto"), client="a") as agent:
        await agent.act("patch", [[0, ["__proto__"], {"polluted": 1}], [0, ["constructor"], 2]])
        await watch(page, server, "proto")
        await agent.act("patch", [[0, ["__proto__", "x"], 3]])
        await until(page, "seq => window.statecastWatch.room.seq === seq", agent.seq)
        await page.locator("#tree").get_by_text("polluted").wait_for(timeout=MS)
        probe = await page.evaluate(
            """() => {
                const r = window.statecastWatch.room;
                return {own: Object.getOwnPropertyDescriptor(r.state, "__proto__").value,
                        constructor: r.state.constructor, polluted: ({}).polluted ?? null,
                        reconnects: r.reconnects, status: r.status};
            }"""
        )
        assert probe == {
            "own": {"polluted": 1, "x": 3},
            "constructor": 2,
            "polluted": None,
            "reconnects": 0,
            "status": "live",
        }


async def test_a_ws_override_to_another_host_is_ignored_and_said(
    page: Page, server: RunningServer
) -> None:
    """`#ws=` naming another host (with a token in the link) is not followed: the page
    connects to its own server, says it ignored the override, and names its endpoint."""
    async with connect(server.room_url("override"), client="a") as agent:
        await agent.act("patch", [[0, ["k"], 1]])
    await watch(page, server, "override", "#token=SECRET&ws=ws://elsewhere.example:1/steal")
    notice = await page.locator("#notice").text_content()
    assert notice is not None and notice.startswith("ignored #ws=ws://elsewhere.example:1/steal")
    endpoint = await page.locator("#status").get_attribute("title")
    assert endpoint == f"{server.ws_url}/rooms/override"
    state = await page.evaluate("window.statecastWatch.room.state")
    assert state == {"k": 1}


async def test_the_watch_page_shows_a_view_and_a_token_limits_it(page: Page) -> None:
    """``#view=`` watches part of the room (named on the page), setView() changes it at
    once; a token whose view claim is one key never brings the rest into the page."""
    async with running_server(auth="jwt", jwt_secret=SECRET, public_spectators=True) as srv:
        writer = token(sub="writer", rooms=["*"])
        async with connect(srv.room_url("views"), token=writer) as agent:
            await agent.act(
                "patch",
                [[0, ["board"], {"a1": "x"}], [0, ["secret"], "SECRET-notes"], [0, ["n"], 1]],
            )
            await watch(page, srv, "views", '#view=[["board"]]')
            held = await page_room(page)
            assert held["state"] == {"board": {"a1": "x"}}
            assert await page.locator("#view").inner_text() == "board"
            await agent.act("patch", [[0, ["board", "b2"], "o"], [0, ["secret"], "SECRET-2"]])
            await until(page, "() => window.statecastWatch.room.state.board.b2 === 'o'")
            await page.evaluate("window.statecastWatch.room.setView([['n']])")
            await until(page, "() => window.statecastWatch.room.state.n === 1")
            assert (await page_room(page))["state"] == {"n": 1}

            limited = token(sub="reader", role="spectator", rooms=["*"], view=[["board"]])
            await page.goto("about:blank")
            await watch(page, srv, "views", f"#token={limited}")
            await agent.act("patch", [[0, ["secret"], "SECRET-3"], [0, ["board", "c3"], "x"]])
            await until(page, "() => window.statecastWatch.room.state.board.c3 === 'x'")
            assert set((await page_room(page))["state"]) == {"board"}
            assert "SECRET" not in await page.content()

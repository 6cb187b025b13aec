"""Limits: each refuses with a clear error, changes nothing, and leaves other clients served.

Conformance: docs/protocol.md §12, and §4.3 (1009), §8.3 (1013) and §10.9 (413, 429, 408).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import resource
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from statecast.protocol.client import RoomClient
from statecast.protocol.errors import Rejection, StatecastError
from statecast.server.history import MIN_HISTORY_BYTES
from statecast.server.limits import FD_RESERVE
from statecast.server.rooms.document import DocumentRoom
from tests.helpers import (
    TIMEOUT,
    BareClient,
    RunningServer,
    bare,
    eventually,
    http_session,
    make_room,
    running_server,
)


@contextlib.asynccontextmanager
async def agent(srv: RunningServer, room: str, client: str) -> AsyncIterator[BareClient]:
    async with bare(srv.room_url(room)) as ws:
        await ws.hello("agent", client=client)
        await ws.recv_type(3)
        yield ws


def patch(aid: int, *ops: Any) -> list[Any]:
    return [4, aid, "patch", list(ops)]


async def replies(ws: BareClient, count: int) -> list[list[Any]]:
    """The next ``count`` ACKs and ERRORs, in arrival order (DIFFs skipped)."""
    out: list[list[Any]] = []
    while len(out) < count:
        message = await ws.recv()
        if message[0] in (7, 8):
            out.append(message)
    return out


async def state_of(srv: RunningServer, room: str) -> Any:
    async with http_session() as http, http.get(f"{srv.http_url}/rooms/{room}/state") as resp:
        return await resp.json()


async def still_served(srv: RunningServer, room: str = "other") -> None:
    """A fresh agent can join and act: the server is serving others normally."""
    async with agent(srv, room, f"probe-{random.random()}") as ws:
        await ws.send(patch(1, [0, ["probe"], True]))
        assert (await replies(ws, 1))[0][:2] == [7, 1]


# --- action rate ---------------------------------------------------------------------------


async def test_actions_over_the_rate_get_rate_limited_then_4029() -> None:
    """Over the bucket: ERROR rate_limited and not applied; persisting closes 4029; others go on."""
    async with running_server(action_rate=1, action_burst=5, rate_strikes=5) as srv:
        async with agent(srv, "r", "fast") as ws, agent(srv, "r", "calm") as calm:
            await ws.send(*[patch(aid, [0, [f"k{aid}"], aid]) for aid in range(1, 9)])
            got = await replies(ws, 8)
            assert sorted(m[1] for m in got if m[0] == 7) == [1, 2, 3, 4, 5]
            assert sorted(m[1] for m in got if m[0] == 8) == [6, 7, 8]
            assert {m[2] for m in got if m[0] == 8} == {"rate_limited"}
            await ws.send(*[patch(aid, [0, [f"k{aid}"], aid]) for aid in range(9, 30)])
            assert await ws.closed() == 4029
            await calm.send(patch(1, [0, ["calm"], 1]))
            assert (await replies(calm, 1))[0][:2] == [7, 1]
        body = await state_of(srv, "r")
        assert body["state"] == {**{f"k{i}": i for i in range(1, 6)}, "calm": 1}
        assert body["seq"] == 6


async def test_a_client_with_many_frames_in_flight_sees_its_4029_at_once() -> None:
    """A client that sent far more frames than the server's receive queue holds still gets
    its close 4029 when the server closes, not when its own close timeout runs out: the
    server reads and drops what arrives while it closes."""
    async with (
        running_server(action_rate=1, action_burst=1, rate_strikes=2) as srv,
        agent(srv, "r", "flood") as ws,
    ):
        for aid in range(1, 60):  # one frame each: websockets queues 16 messages unread
            await ws.send(patch(aid, [0, ["k"], aid]))
        assert await ws.closed(timeout=TIMEOUT) == 4029  # its close_timeout is 10 s


def syncs_seen(srv: RunningServer) -> float:
    """The HELLOs the server has welcomed (each counted under its sync kind)."""
    registry = srv.app.metrics.registry
    kinds = ("snapshot", "replay", "current")
    return sum(registry.get_sample_value("statecast_syncs_total", {"sync": k}) or 0 for k in kinds)


async def test_a_client_closed_4029_again_and_again_backs_off() -> None:
    """The Python client waits rate_limited_delay before every retry after 4029, WELCOME or not.

    An app keeps acting as fast as it is answered, so every connection is refused and
    closed 4029 soon after its WELCOME. The server sees the client come back each time, and
    never sooner than rate_limited_delay after the close, where a backoff reset by each
    WELCOME would bring it back within milliseconds.
    """
    floor = 0.3
    async with running_server(action_rate=0.001, action_burst=1, rate_strikes=2) as srv:
        client = RoomClient(
            srv.room_url("r"),
            client="greedy",
            backoff_base=0.001,
            backoff_max=0.005,
            rate_limited_delay=floor,
        )
        await client.start()

        async def greedy(n: int) -> None:
            for i in itertools.count():
                try:
                    await client.act("patch", [[0, [f"k{n}"], i]])
                except Rejection:
                    continue
                except StatecastError:
                    return

        workers = [asyncio.create_task(greedy(n)) for n in range(4)]
        registry = srv.app.metrics.registry
        try:
            await until(
                lambda: (
                    (registry.get_sample_value("statecast_closes_total", {"code": "4029"}) or 0)
                    >= 1
                )
            )
            # Causal, not a timing: HELLO before+1 comes after `start` (the count was
            # `before` then), and each later one at least `floor` after a 4029 that followed
            # the one before it; so seeing HELLO before+4 takes at least 3 floors however
            # loaded the machine is, while a backoff reset by each WELCOME would take
            # milliseconds.
            loop = asyncio.get_running_loop()
            start, before = loop.time(), syncs_seen(srv)
            await until(lambda: syncs_seen(srv) >= before + 4)
            elapsed = loop.time() - start
            assert elapsed >= 3 * floor, f"4 HELLOs within {elapsed:.3f} s"
            assert client.connections >= 4
        finally:
            await client.close()
            await asyncio.gather(*workers)


async def test_spectator_actions_and_resyncs_spend_the_bucket() -> None:
    """A spectator's refused ACTIONs and any RESYNC are rate limited like an agent's ACTIONs."""
    settings = {"action_rate": 1, "action_burst": 2, "rate_strikes": 10}
    async with running_server(**settings) as srv, bare(srv.room_url("r")) as ws:
        await make_room(srv, "r")
        welcome = await ws.hello("spectator")
        await ws.recv_type(3)
        await ws.send(patch(1, [0, ["x"], 1]), patch(2, [0, ["x"], 1]), patch(3))
        assert [(m[1], m[2]) for m in await replies(ws, 3)] == [
            (1, "forbidden"),
            (2, "forbidden"),
            (3, "rate_limited"),
        ]
        await ws.send([6, welcome["epoch"], 0])
        assert (await ws.recv_type(8))[:3] == [8, None, "rate_limited"]


async def test_http_actions_over_the_rate_get_429() -> None:
    """POST /actions over a client's rate answers 429 rate_limited and applies nothing."""
    # A refill of one token per 1,000 s: the third POST finds the bucket empty however slowly
    # the machine runs them.
    async with running_server(action_rate=0.001, action_burst=2) as srv, http_session() as http:
        url = f"{srv.http_url}/rooms/h/actions"
        statuses = []
        for aid in range(1, 4):
            body = {"client": "c", "aid": aid, "name": "patch", "args": [[0, [f"k{aid}"], aid]]}
            async with http.post(url, json=body) as resp:
                statuses.append((resp.status, await resp.json()))
        assert [s for s, _ in statuses] == [200, 200, 429]
        assert statuses[2][1]["code"] == "rate_limited"
        assert (await state_of(srv, "h"))["state"] == {"k1": 1, "k2": 2}
        body = {"client": "d", "aid": 1, "name": "patch", "args": []}
        async with http.post(url, json=body) as resp:
            assert resp.status == 200


async def until(condition: Callable[[], bool]) -> None:
    """Wait (bounded by TIMEOUT) for a condition on the server's side."""
    for _ in range(int(TIMEOUT * 2 / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def test_resyncs_from_a_client_that_does_not_read_do_not_pile_up() -> None:
    """RESYNCs asked while earlier answers wait unread are not each answered with a SNAPSHOT."""
    async with running_server(action_rate=0, slow_high_water=64 * 1024) as srv:
        async with agent(srv, "big", "writer") as writer:
            for aid in (1, 2):
                await writer.send(patch(aid, [0, [f"k{aid}"], "x" * 600_000]))
                await writer.recv_type(7)
        host, port = srv.ws_url.split("//", 1)[1].rsplit(":", 1)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        url = srv.room_url("big")
        async with websockets.connect(url, sock=sock, max_size=None, max_queue=1) as ws:
            client = BareClient(ws)
            await client.send([1, {"v": 1, "role": "agent", "client": "reader"}])
            for _ in range(40):  # a stale epoch: each would be answered with a whole SNAPSHOT
                await client.send([6, "AAAAAAAA", 0])
            await client.send(patch(1, [0, ["done"], True]))
            live = srv.app.rooms.rooms["big"]
            await until(lambda: live.feed.head == 3)  # every RESYNC before it has been handled
            snapshots = 0
            while (message := await client.recv())[0] != 7:
                snapshots += message[0] == 3
        assert srv.app.metrics.slow_skips._value.get() >= 1
        assert 1 <= snapshots < 30, snapshots
        await still_served(srv, "big")


# --- connections and rooms -----------------------------------------------------------------


async def test_connections_over_the_total_are_refused_with_503() -> None:
    """Past max_connections a handshake gets 503; the connected clients keep being served."""
    async with running_server(max_connections=2) as srv:
        async with agent(srv, "a", "one") as one, agent(srv, "b", "two"):
            with pytest.raises(InvalidStatus) as info:
                async with websockets.connect(srv.room_url("c"), open_timeout=TIMEOUT):
                    pass
            assert info.value.response.status_code == 503
            await one.send(patch(1, [0, ["x"], 1]))
            assert (await replies(one, 1))[0] == [7, 1, 1]
        await still_served(srv)


async def test_connections_over_the_room_limit_close_1013() -> None:
    """Past max_room_connections a HELLO is closed with 1013; other rooms still join."""
    async with running_server(max_room_connections=1) as srv, agent(srv, "full", "one") as one:
        async with bare(srv.room_url("full")) as extra:
            await extra.send([1, {"v": 1, "role": "spectator"}])
            assert await extra.closed() == 1013
        await still_served(srv, "other")
        await one.send(patch(1, [0, ["x"], 1]))
        assert (await replies(one, 1))[0] == [7, 1, 1]
        assert srv.app.rooms.rooms["full"].feed.connections == 1


async def test_rooms_over_the_limit_are_not_created() -> None:
    """Past max_rooms of busy rooms a new one is refused (WS 1013, HTTP 503 unavailable, to
    retry with the same aid: nothing was processed); held rooms work."""
    async with running_server(max_rooms=1) as srv, agent(srv, "first", "one") as one:
        async with bare(srv.room_url("second")) as extra:
            await extra.send([1, {"v": 1, "role": "agent"}])
            assert await extra.closed() == 1013
        async with http_session() as http:
            body = {"client": "c", "aid": 1, "name": "patch", "args": []}
            async with http.post(f"{srv.http_url}/rooms/third/actions", json=body) as resp:
                assert resp.status == 503 and (await resp.json())["code"] == "unavailable"
                assert resp.headers["Retry-After"] == "1"
        assert sorted(srv.app.rooms.rooms) == ["first"]
        await one.send(patch(1, [0, ["x"], 1]))
        assert (await replies(one, 1))[0] == [7, 1, 1]


async def test_concurrent_room_creations_respect_the_room_limit(tmp_path: Path) -> None:
    """Many rooms created at once over a store that awaits: only max_rooms of them exist."""
    store = f"sqlite:{tmp_path / 'rooms.db'}"
    async with running_server(max_rooms=2, store=store) as srv, http_session() as http:

        async def create(room: str) -> int:
            body = {"client": "c", "aid": 1, "name": "patch", "args": []}
            async with http.post(f"{srv.http_url}/rooms/{room}/actions", json=body) as resp:
                return resp.status

        statuses = await asyncio.gather(*(create(f"c{i}") for i in range(8)))
        # A room whose action is done is idle and makes space: how many fit depends on timing.
        assert statuses.count(200) >= 2 and set(statuses) <= {200, 503}
        assert len(srv.app.rooms.rooms) <= 2


async def test_idle_rooms_unload_to_make_space_and_load_again() -> None:
    """At max_rooms the least recently used idle room is unloaded; it loads back as it was."""
    async with running_server(max_rooms=2) as srv, http_session() as http:
        for room in ("r1", "r2"):
            async with agent(srv, room, "a") as ws:
                await ws.send(patch(1, [0, ["name"], room]))
                assert (await replies(ws, 1))[0] == [7, 1, 1]
        async with agent(srv, "r3", "a") as ws:
            await eventually(lambda: "r1" not in srv.app.rooms.rooms)
            assert set(srv.app.rooms.rooms) == {"r2", "r3"}
            async with http.get(f"{srv.http_url}/rooms/r1/state") as resp:
                assert (await resp.json())["state"] == {"name": "r1"}
            assert set(srv.app.rooms.rooms) == {"r3", "r1"}  # r2 made space; r3 is busy
            async with bare(srv.room_url("r2")) as again:
                welcome = await again.hello("agent", client="a")
                assert (welcome["seq"], welcome["acked"]) == (1, 1)
            await ws.send(patch(1, [0, ["x"], 1]))
            assert (await replies(ws, 1))[0] == [7, 1, 1]


# --- state size, depth, key length ---------------------------------------------------------


async def test_state_size_limit_rejects_growth_and_allows_shrinking() -> None:
    """A patch that would take the state past max_state_bytes is too_large and changes nothing."""
    async with running_server(max_state_bytes=4096) as srv, agent(srv, "s", "a") as ws:
        await ws.send(patch(1, [0, ["big"], "x" * 3000]))
        assert (await replies(ws, 1))[0] == [7, 1, 1]
        await ws.send(patch(2, [0, ["ok"], 1], [0, ["more"], "y" * 1500]))
        error = (await replies(ws, 1))[0]
        assert error[:3] == [8, 2, "too_large"]
        body = await state_of(srv, "s")
        assert body["seq"] == 1 and body["state"] == {"big": "x" * 3000}
        async with http_session() as http:
            post = {"client": "h", "aid": 1, "name": "patch", "args": [[2, ["l"], []]]}
            post["args"] = [[0, ["list"], ["z" * 600] * 3]]
            async with http.post(f"{srv.http_url}/rooms/s/actions", json=post) as resp:
                assert resp.status == 413 and (await resp.json())["code"] == "too_large"
        # Replacing the big value with a small one, then growing again, fits.
        await ws.send(patch(3, [0, ["big"], "small"]), patch(4, [0, ["more"], "y" * 1500]))
        assert [m[:2] for m in await replies(ws, 2)] == [[7, 3], [7, 4]]
        live = srv.app.rooms.rooms["s"]
        assert live.writer.room.state_bytes == len(msgpack.packb(live.writer.room.state))


async def test_path_depth_and_key_length_limits() -> None:
    """Paths or values nested past max_depth, and keys past max_key_length, are too_large."""
    async with running_server(max_depth=8, max_key_length=16) as srv, agent(srv, "d", "a") as ws:
        nested: Any = 1
        for _ in range(8):
            nested = {"n": nested}
        cases = [
            [0, ["k"] * 9, 1],
            [0, ["a"], nested],
            [0, ["k" * 17], 1],
            [0, ["a"], {"fine": [{"k" * 17: 1}]}],
            [0, ["a", "b"], {"x" * 17: 1}],
        ]
        for aid, op in enumerate(cases, 1):
            await ws.send(patch(aid, op))
            assert (await replies(ws, 1))[0][:3] == [8, aid, "too_large"], op
        await ws.send(patch(9, [0, ["k" * 16], {"y" * 16: [1]}], [0, ["k"] * 8, 1]))
        assert (await replies(ws, 1))[0] == [7, 9, 1]
        assert (await state_of(srv, "d"))["seq"] == 1


def test_state_size_estimate_matches_the_encoding() -> None:
    """The O(change) size figure equals the exact encoded size after any run of patches."""
    rng = random.Random(1729)
    room = DocumentRoom("est")
    room.set_limits(max_depth=64, max_key_length=None, max_state_bytes=1 << 30)

    def value(depth: int = 0) -> Any:
        r = rng.random()
        if depth < 3 and r < 0.2:
            return {f"k{rng.randrange(30)}": value(depth + 1) for _ in range(rng.randrange(20))}
        if depth < 3 and r < 0.35:
            return [value(depth + 1) for _ in range(rng.randrange(20))]
        return rng.choice([None, True, 1, 300, -5, 1.5, "s" * rng.randrange(40), 70000])

    def path() -> list[Any]:
        out: list[Any] = []
        node: Any = room.state
        for _ in range(rng.randrange(1, 4)):
            if isinstance(node, dict):
                key = rng.choice([*node, f"new{rng.randrange(50)}"])
                out.append(key)
                node = node.get(key)
            elif isinstance(node, list):
                index = rng.randrange(-1, len(node) + 1)
                out.append(index)
                node = node[index] if 0 <= index < len(node) else None
            else:
                break
        return out or ["a"]

    applied = 0
    for _ in range(3000):
        kind = rng.choice([0, 0, 1, 2])
        op = [kind, path()] + ([] if kind == 1 else [value()])
        with contextlib.suppress(Rejection):
            room.run_action("c", "patch", [op, [0, [f"t{rng.randrange(40)}"], value()]])
            applied += 1
        assert room.state_bytes == len(msgpack.packb(room.state, use_bin_type=True))
    assert applied > 1000


# --- HTTP body and slow clients ------------------------------------------------------------


async def test_http_body_over_the_limit_is_413_json() -> None:
    """A POST body over http_max_body answers 413 too_large with a JSON body; nothing applied."""
    async with running_server(http_max_body=1024) as srv, http_session() as http:
        body = {"client": "c", "aid": 1, "name": "patch", "args": [[0, ["x"], "x" * 2000]]}
        async with http.post(f"{srv.http_url}/rooms/b/actions", json=body) as resp:
            assert resp.status == 413
            assert (await resp.json())["code"] == "too_large"
        assert "b" not in srv.app.rooms.rooms
        body["args"] = [[0, ["x"], 1]]
        async with http.post(f"{srv.http_url}/rooms/b/actions", json=body) as resp:
            assert resp.status == 200


async def _open_raw(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def _dribble_until_closed(url: str, payload: bytes) -> bytes:
    """Send ``payload`` a byte at a time until the server closes; return what it answered."""
    reader, writer = await _open_raw(url)
    try:
        async with asyncio.timeout(TIMEOUT * 2):
            for i in range(len(payload)):
                if reader.at_eof():
                    break
                writer.write(payload[i : i + 1])
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        chunk = await reader.read(65536)
                        if not chunk:
                            break
                        return chunk + await reader.read()
            return await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


SLOW_HEADERS = b"GET /rooms/x/state HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: " + b"a" * 100_000


async def test_slow_http_headers_are_cut_off_and_others_served() -> None:
    """Connections trickling headers are closed after the idle timeout; others are answered."""
    async with running_server(http_idle_timeout=0.3) as srv:
        slow = [asyncio.create_task(_dribble_until_closed(srv.http_url, SLOW_HEADERS))]
        slow.append(asyncio.create_task(_dribble_until_closed(srv.http_url, SLOW_HEADERS)))
        async with http_session() as http, http.get(f"{srv.http_url}/healthz") as resp:
            assert resp.status == 200
        done = await asyncio.gather(*slow)
        assert all(b"200 OK" not in answer for answer in done)


async def test_slow_http_body_gets_408() -> None:
    """A POST whose body stops arriving is answered 408 and closed; the room is untouched."""
    async with running_server(http_idle_timeout=0.3) as srv:
        reader, writer = await _open_raw(srv.http_url)
        writer.write(
            b"POST /rooms/slow/actions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"client": '
        )
        await writer.drain()
        answer = b""
        async with asyncio.timeout(TIMEOUT):
            # aiohttp keeps reading (lingering) a little before it closes: read the answer only.
            while not answer.endswith(b"}"):
                chunk = await reader.read(65536)
                assert chunk, answer
                answer += chunk
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        assert answer.startswith(b"HTTP/1.1 408") and b"Connection: close" in answer
        assert b'"code": "timeout"' in answer
        assert "slow" not in srv.app.rooms.rooms
        await still_served(srv)


async def test_slow_websocket_handshake_is_cut_off() -> None:
    """A WebSocket handshake trickling in is closed after the HELLO timeout; others still join."""
    async with running_server(hello_timeout=0.3) as srv:
        request = (
            b"GET /rooms/x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n" + b"X-Slow: " + b"a" * 100_000
        )
        slow = asyncio.create_task(_dribble_until_closed(srv.ws_url, request))
        await still_served(srv)
        assert b"101" not in await slow


async def test_a_small_room_holds_about_its_state_size_of_history() -> None:
    """Diffs older than a SNAPSHOT's worth are dropped: a resume from before gets a SNAPSHOT."""
    async with running_server(action_rate=0) as srv, agent(srv, "small", "a") as ws:
        epoch = srv.app.rooms.rooms["small"].feed.epoch
        await ws.send(*(patch(aid, [0, ["v"], f"{aid:040}"]) for aid in range(1, 2001)))
        assert (await replies(ws, 2000))[-1] == [7, 2000, 2000]  # 2,000 diffs, ~110 KB
        feed = srv.app.rooms.rooms["small"].feed
        assert feed.oldest > 0 and feed.history.size_after(feed.oldest) <= MIN_HISTORY_BYTES
        async with bare(srv.room_url("small")) as late:
            assert (await late.hello("spectator", resume=[epoch, 1]))["sync"] == "snapshot"
        async with (
            http_session() as http,
            http.get(f"{srv.http_url}/rooms/small/changes?epoch={epoch}&since=1") as resp,
        ):
            assert resp.status == 410


def test_the_open_file_limit_is_raised_to_the_hard_limit_at_start() -> None:
    """A low soft limit is raised to the hard one; a hard limit too low is warned about."""
    code = (
        "import resource\n"
        "from statecast.server.limits import raise_open_file_limit\n"
        "raise_open_file_limit(10000)\n"
        "print('limits', *resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    current = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    for hard in {min(current, 20_000), min(current, 2_000)}:
        warned = hard < 10_000 + FD_RESERVE
        shell = f'ulimit -Sn 256 && ulimit -Hn {hard} && exec {sys.executable} -c "$0"'
        result = subprocess.run(
            ["sh", "-c", shell, code], capture_output=True, text=True, timeout=30, check=True
        )
        assert f"limits {hard} {hard}" in result.stdout
        assert ("open-file limit is below --max-connections" in result.stdout) is warned

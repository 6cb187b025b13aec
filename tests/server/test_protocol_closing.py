"""Conformance: docs/protocol.md §8 (closing) and §5.9 (complaints), over a bare client.

Every bad-input case runs beside a bystander agent that joined first; after the
bad client is closed (or answered with ERROR), the bystander must still act and
see its DIFF and ACK: one client's mistake never costs another its service.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import pytest
import websockets
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.streams import StreamReader
from websockets.uri import parse_uri

from tests.helpers import (
    TIMEOUT,
    BareClient,
    RunningServer,
    bare,
    http_session,
    make_room,
    pack,
    running_server,
)
from tests.server.test_protocol_messages import bystander, get_json, joined, until_ack

HELLO = [1, {"v": 1, "role": "agent", "client": "bad"}]

Misbehave = Callable[[BareClient], Awaitable[None]]


async def send_raw(client: BareClient, data: bytes | str) -> None:
    await client.ws.send(data)


async def after_hello(client: BareClient, data: bytes) -> None:
    await client.hello("agent", client="bad")
    await client.recv_type(3)
    await client.ws.send(data)


CLOSE_CASES: list[tuple[str, Misbehave, int]] = [
    ("text frame", lambda c: send_raw(c, "[1, {}]"), 1003),
    ("text frame after HELLO", lambda c: _text_after_hello(c), 1003),
    ("garbage bytes", lambda c: send_raw(c, b"\xc1\xc1"), 1007),
    ("empty binary frame", lambda c: send_raw(c, b""), 1007),
    ("empty frame after HELLO", lambda c: after_hello(c, b""), 1007),
    ("truncated msgpack", lambda c: send_raw(c, pack(HELLO)[:-2]), 1007),
    ("not an array", lambda c: send_raw(c, pack({"v": 1})), 1007),
    ("empty array", lambda c: send_raw(c, pack([])), 1007),
    ("unknown message type", lambda c: send_raw(c, pack([42, {}])), 1007),
    ("server message type from client", lambda c: send_raw(c, pack([7, 1, 1])), 1007),
    ("HELLO with wrong field types", lambda c: send_raw(c, pack([1, {"v": 1, "role": 5}])), 1007),
    ("HELLO with bad resume", lambda c: send_raw(c, pack([1, {**HELLO[1], "resume": "x"}])), 1007),
    ("ACTION with a str aid", lambda c: after_hello(c, pack([4, "1", "patch", []])), 1007),
    ("ACTION with aid 0", lambda c: after_hello(c, pack([4, 0, "patch", []])), 1007),
    ("ACTION with a bytes name", lambda c: after_hello(c, pack([4, 1, b"patch", []])), 1007),
    ("ACTION too short", lambda c: after_hello(c, pack([4, 1, "patch"])), 1007),
    ("RESYNC with a negative seq", lambda c: after_hello(c, pack([6, "e", -1])), 1007),
    ("malformed before HELLO is 1007, not 4000", lambda c: send_raw(c, pack([4, "x"])), 1007),
    ("ACTION before HELLO", lambda c: send_raw(c, pack([4, 1, "patch", []])), 4000),
    ("RESYNC before HELLO", lambda c: send_raw(c, pack([6, "abcdefgh", 0])), 4000),
    ("HELLO twice", lambda c: after_hello(c, pack(HELLO)), 4000),
    ("HELLO twice in the first frame", lambda c: send_raw(c, pack(HELLO, HELLO)), 4000),
    ("unsupported version", lambda c: send_raw(c, pack([1, {"v": 2, "role": "agent"}])), 4000),
    ("unsupported version, other fields", lambda c: send_raw(c, pack([1, {"v": 2}])), 4000),
]


async def _text_after_hello(client: BareClient) -> None:
    await client.hello("agent", client="bad")
    await client.recv_type(3)
    await client.ws.send("text")


async def expect_close(client: BareClient, code: int) -> None:
    assert await client.closed() == code


@pytest.mark.parametrize(
    ("misbehave", "code"),
    [pytest.param(m, code, id=name) for name, m, code in CLOSE_CASES],
)
async def test_bad_input_closes_with_its_code_and_others_are_served(
    server: RunningServer, misbehave: Misbehave, code: int
) -> None:
    """§4.6, §8.1, §8.2: Each row of the closing table closes the offender with its code; a
    bystander is served.
    """
    async with bystander(server, "closing") as by:
        await by.served()
        async with bare(server.room_url("closing")) as bad:
            await misbehave(bad)
            await expect_close(bad, code)
        await by.served()


async def test_frame_is_checked_whole(server: RunningServer) -> None:
    """§4.2: A frame with a valid ACTION then a malformed message closes 1007 and applies
    nothing.
    """
    async with bystander(server, "whole") as by:
        head = await by.served()
        async with joined(server, "whole", client="bad") as (bad, _):
            await bad.send([4, 1, "patch", [[0, ["x"], 1]]], [4, "two", "patch", []])
            await expect_close(bad, 1007)
        # Nothing from the bad frame took effect: the bystander's next diff is head + 1.
        assert await by.served() == head + 1
        async with http_session() as http:
            body = await get_json(http, f"{server.http_url}/rooms/whole/state")
            assert "x" not in body["state"] and body["seq"] == head + 1
            acked = await get_json(http, f"{server.http_url}/rooms/whole/clients/bad")
            assert acked["acked"] == 0


async def test_first_frame_checked_whole_before_hello() -> None:
    """§4.2, §8.2: A HELLO + ACTION + malformed first frame closes 1007 before joining or acting."""
    async with running_server() as server, bystander(server, "whole2") as by:
        await by.served()
        async with bare(server.room_url("whole2")) as bad:
            await bad.send(HELLO, [4, 1, "patch", [[0, ["x"], 1]]], [9])
            await expect_close(bad, 1007)
        assert await by.served() == 2


async def test_oversize_message_closes_1009() -> None:
    """§4.3: A message over max_message_bytes closes with 1009; a message just under is served."""
    async with running_server(max_message_bytes=65536) as server, bystander(server, "big") as by:
        await by.served()
        async with joined(server, "big", client="ok") as (ok, _):
            near = [4, 1, "patch", [[0, ["s"], "x" * 60_000]]]
            await ok.send(near)
            assert (await ok.recv_type(7))[:2] == [7, 1]
        async with joined(server, "big", client="bad") as (bad, _):
            await bad.send([4, 1, "patch", [[0, ["s"], "x" * 70_000]]])
            await expect_close(bad, 1009)
        await by.served()


async def test_no_hello_in_time_closes_4000() -> None:
    """§5.2, §8.1: A connection that sends no HELLO within hello_timeout is closed with 4000."""
    async with running_server(hello_timeout=0.2) as server, bystander(server, "slow") as by:
        await by.served()
        async with bare(server.room_url("slow")) as bad:
            await expect_close(bad, 4000)
        await by.served()


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/rooms",
        "/rooms/",
        "/rooms/a/b",
        "/rooms/bad%20name",
        "/other/x",
        "/rooms/" + "a" * 129,
    ],
)
async def test_bad_path_is_refused_with_404(server: RunningServer, path: str) -> None:
    """§4.1: Any path but /rooms/{room} is refused during the handshake with HTTP 404."""
    async with bystander(server, "paths") as by:
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(server.ws_url + path, open_timeout=TIMEOUT):
                pass
        assert info.value.response.status_code == 404
        await by.served()


# --- complaints that keep the connection open ---------------------------------------------------


def _unhashable_key_args() -> bytes:
    """ACTION args holding a map keyed by an array (valid msgpack no state can hold)."""
    return b"\x94\x04\x01\xa5patch" + b"\x91\x93\x00\x91\xa1k\x81\x91\x01\x02"


def _deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


ERROR_CASES: list[tuple[str, bytes, str]] = [
    ("unknown action", pack([4, 1, "explode", None]), "unknown_action"),
    ("patch args not a list", pack([4, 1, "patch", {"a": 1}]), "invalid"),
    ("del of a missing key", pack([4, 1, "patch", [[1, ["nope"]]]]), "invalid"),
    ("empty path", pack([4, 1, "patch", [[0, [], 1]]]), "invalid"),
    ("index out of range", pack([4, 1, "patch", [[2, ["l", 5], 1]]]), "invalid"),
    ("path through a scalar", pack([4, 1, "patch", [[0, ["n", "x"], 1]]]), "invalid"),
    ("unknown op kind", pack([4, 1, "patch", [[9, ["a"], 1]]]), "invalid"),
    ("NaN value", pack([4, 1, "patch", [[0, ["a"], math.nan]]]), "invalid"),
    ("infinite value", pack([4, 1, "patch", [[0, ["a"], math.inf]]]), "invalid"),
    ("bytes value", pack([4, 1, "patch", [[0, ["a"], b"\x00"]]]), "invalid"),
    ("ext type value", pack([4, 1, "patch", [[0, ["a"], msgpack.ExtType(1, b"x")]]]), "invalid"),
    ("int map key", pack([4, 1, "patch", [[0, ["a"], {1: 2}]]]), "invalid"),
    ("unhashable map key", _unhashable_key_args(), "invalid"),
    ("int above 2^53", pack([4, 1, "patch", [[0, ["a"], 2**53]]]), "invalid"),
    ("NaN args to an unknown action", pack([4, 1, "explode", math.nan]), "unknown_action"),
    ("path too deep", pack([4, 1, "patch", [[0, ["k"] * 65, 1]]]), "too_large"),
    ("value too deep", pack([4, 1, "patch", [[0, ["a"], _deep(64)]]]), "too_large"),
]


@pytest.mark.parametrize(
    ("frame", "code"), [pytest.param(f, c, id=name) for name, f, c in ERROR_CASES]
)
async def test_bad_action_gets_error_not_close(
    server: RunningServer, frame: bytes, code: str
) -> None:
    """§3.4, §5.5, §5.9, §9.1: A rejected action gets ERROR with its code, changes nothing, and the
    socket stays open.
    """
    async with bystander(server, "errors") as by:
        async with http_session() as http:
            setup = {"client": "setup", "aid": 1, "name": "patch"}
            setup["args"] = [[0, ["n"], 1], [0, ["l"], [1]]]
            async with http.post(f"{server.http_url}/rooms/errors/actions", json=setup) as r:
                assert r.status == 200
        head = await by.served()
        async with joined(server, "errors", client="bad") as (bad, _):
            await bad.ws.send(frame)
            kind, aid, got, message = await bad.recv()
            assert (kind, aid, got) == (8, 1, code) and isinstance(message, str)
            # Still open and still served.
            await bad.send([6, "x" * 8, 0])
            assert (await bad.recv())[0] == 3
        assert await by.served() == head + 1
        async with http_session() as http:
            state = (await get_json(http, f"{server.http_url}/rooms/errors/state"))["state"]
            assert state == {"n": 1, "l": [1], "bystander": {"b": 2}}


async def test_no_such_room_closes_4004_when_rooms_are_not_created_on_join() -> None:
    """§8.1, §9.1: With create_rooms off, a HELLO for a room that does not exist closes
    with 4004.
    """
    async with running_server(create_rooms=False) as server, bare(server.room_url("none")) as c:
        await c.send(HELLO)
        assert await c.closed() == 4004


async def test_shutdown_closes_every_client_with_1001() -> None:
    """§8.1: A server shutting down closes its connections with 1001 (reconnect and resume)."""
    async with (
        running_server() as server,
        joined(server, "bye", client="a") as (agent, _),
        joined(server, "bye", "spectator") as (spectator, _),
    ):
        stopping = asyncio.create_task(server.app.stop())
        assert await agent.closed() == 1001
        assert await spectator.closed() == 1001
        await stopping


# --- nothing after the close frame -------------------------------------------------------------


def parse_frames(data: bytes) -> list[Frame]:
    """The server frames ``data`` holds, in order (websockets' own frame parser)."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frames = []
    while True:
        parser = Frame.parse(reader.read_exact, mask=False, max_size=None)
        try:
            while True:
                next(parser)
        except StopIteration as done:
            frames.append(done.value)
        except EOFError:
            return frames


async def test_no_frame_follows_the_servers_close_frame(server: RunningServer) -> None:
    """§8, RFC 6455 §5.5.1: a spectator closes while diffs stream; the server answers
    with its close frame and writes nothing after it, though the spectator's TCP
    connection stays open and the room goes on publishing. The others are served.

    The spectator speaks WebSocket through websockets' sans-I/O client for the
    handshake and its own frames, and reads the server's bytes raw to the end.
    """
    room = "close-midstream"
    await make_room(server, room)
    reader, writer = await asyncio.open_connection("127.0.0.1", int(server.ws_url.rsplit(":")[-1]))
    client = ClientProtocol(parse_uri(server.room_url(room)))
    client.send_request(client.connect())
    writer.write(b"".join(client.data_to_send()))
    while not any(isinstance(e, Response) for e in client.events_received()):
        client.receive_data(await asyncio.wait_for(reader.read(65536), TIMEOUT))
    assert client.handshake_exc is None
    client.send_binary(pack([1, {"v": 1, "role": "spectator"}]))
    writer.write(b"".join(client.data_to_send()))
    async with bystander(server, room) as by, joined(server, room, "spectator") as (watcher, _):
        first = await by.served()
        stop = asyncio.Event()

        async def act() -> int:
            sent = 0
            while not stop.is_set() and sent < 2_000:
                sent += 1
                await by.client.send([4, 1000 + sent, "patch", [[0, ["n"], sent]]])
                await asyncio.sleep(0.001)
            return sent

        acting = asyncio.create_task(act())
        await asyncio.sleep(0.05)
        client.send_close(1000, "bye")
        writer.write(b"".join(client.data_to_send()))
        received = await asyncio.wait_for(reader.read(), TIMEOUT)  # to the server's EOF
        await asyncio.sleep(0.05)  # diffs go on after the close: none may reach the spectator
        stop.set()
        sent = await acting
        writer.close()
        frames = parse_frames(received)
        closes = [i for i, f in enumerate(frames) if f.opcode is Opcode.CLOSE]
        assert closes == [len(frames) - 1], [f.opcode for f in frames]
        assert any(f.opcode is Opcode.BINARY for f in frames)  # it was closed mid-stream
        answers = await until_ack(by.client, 1000 + sent)
        assert [m[1] for m in answers if m[0] == 7] == [1000 + i for i in range(1, sent + 1)]
        by.aid = 1000 + sent
        last = await by.served()
        assert last == first + sent + 1
        seqs = []
        while not seqs or seqs[-1] < last:
            message = await watcher.recv()
            if message[0] == 5:
                seqs.append(message[1])
        assert seqs == list(range(first, last + 1))

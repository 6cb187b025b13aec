"""Fuzzing a live server with malformed, mutated and out-of-order frames.

Each example opens a real connection, sends what Hypothesis drew (before or
after HELLO) and checks the server's answer against an oracle written from
docs/protocol.md alone (§4.2, §4.6, §5.5, §8.1), not from protocol/codec.py:
1007 for anything that is not a msgpack stream of well-formed client messages
(checked whole, before 4000), 4000 for a well-formed message out of order, 1003
for text, and for ACTIONs with bad args an ERROR, never a close. Throughout, an
observer agent connected to the same room must keep acting and receiving every
DIFF in order.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
import websockets
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from statecast.protocol import codec
from statecast.protocol.errors import MalformedMessage
from tests.helpers import TIMEOUT, BareClient, RunningServer, bare, pack, running_server

ROOM = "fuzz"
MAX_SAFE_INT = 2**53 - 1
ERROR_CODES = {"forbidden", "invalid", "unknown_action", "rate_limited", "too_large", "conflict"}

FUZZ_SETTINGS = settings(
    max_examples=75,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)

_ids = itertools.count(1)


# --- the oracle: docs/protocol.md's client message forms (§5.1) -----------------------------

MALFORMED, OUT_OF_ORDER, OK = "malformed", "out_of_order", "ok"


class _Unhashable(list[Any]):
    """A map whose keys cannot be Python dict keys: valid msgpack, never a valid message field."""


def _pairs(pairs: list[tuple[Any, Any]]) -> Any:
    try:
        return dict(pairs)
    except TypeError:
        return _Unhashable(pairs)


def split_frame(data: bytes) -> list[Any] | None:
    """The msgpack values of a frame, or None if it is not exactly a msgpack stream."""
    if not data:
        return None
    unpacker = msgpack.Unpacker(
        raw=False, strict_map_key=False, object_pairs_hook=_pairs, timestamp=0
    )
    unpacker.feed(data)
    values = []
    end = 0
    try:
        for value in unpacker:
            values.append(value)
            end = unpacker.tell()
    except (ValueError, TypeError, msgpack.StackError, msgpack.ExtraData):
        return None
    return values if end == len(data) else None


def _is_int(v: Any) -> bool:
    return type(v) is int


def message_kind(value: Any) -> int | None:
    """The message type (1 HELLO, 4 ACTION, 6 RESYNC) of a well-formed message, else None."""
    if type(value) is not list or not value or not _is_int(value[0]):
        return None
    kind = value[0]
    if kind == 1:
        if len(value) != 2 or type(value[1]) is not dict:
            return None
        body = value[1]
        if not _is_int(body.get("v")):
            return None
        if body["v"] != 1:
            return 1  # another version: only 'v' is read; the answer is 4000
        resume = body.get("resume")
        ok = (
            body.get("role") in ("agent", "spectator")
            and (body.get("token") is None or type(body.get("token")) is str)
            and (body.get("client") is None or type(body.get("client")) is str)
            and (
                resume is None
                or (
                    type(resume) is list
                    and len(resume) == 2
                    and type(resume[0]) is str
                    and _is_int(resume[1])
                    and resume[1] >= 0
                )
            )
        )
        return 1 if ok else None
    if kind == 4:
        ok = (
            len(value) == 4
            and _is_int(value[1])
            and 1 <= value[1] <= MAX_SAFE_INT
            and type(value[2]) is str
        )
        return 4 if ok else None
    if kind == 6:
        ok = len(value) == 3 and type(value[1]) is str and _is_int(value[2]) and value[2] >= 0
        return 6 if ok else None
    return None


def expect(data: bytes, *, after_hello: bool) -> str:
    """What the server must do with this frame: close 1007, close 4000, or carry on."""
    values = split_frame(data)
    if values is None:
        return MALFORMED
    kinds = [message_kind(v) for v in values]
    if None in kinds:
        return MALFORMED
    if after_hello:
        return OUT_OF_ORDER if 1 in kinds else OK
    first = values[0]
    if kinds[0] != 1 or first[1]["v"] != 1 or 1 in kinds[1:]:
        return OUT_OF_ORDER
    return OK


# --- strategies ------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.binary(max_size=8),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=4), st.integers(-3, 3)), children, max_size=4),
    ),
    max_leaves=12,
)
small_ints = st.one_of(st.integers(-2, 10), st.sampled_from([0, 2**53 - 1, 2**53, 2**64 - 1]))
epoch = st.text(alphabet="abcXYZ019_-", min_size=0, max_size=12)

hellos = st.builds(
    lambda v, role, client, resume, extra: [
        1,
        {"v": v, "role": role, **({"client": client} if client else {}), **resume, **extra},
    ],
    st.one_of(st.just(1), small_ints, values),
    st.one_of(st.sampled_from(["agent", "spectator"]), values),
    st.one_of(st.none(), st.text(min_size=1, max_size=6), values),
    st.one_of(st.just({}), st.builds(lambda e, s: {"resume": [e, s]}, epoch, small_ints)),
    st.one_of(st.just({}), st.dictionaries(st.text(max_size=3), values, max_size=2)),
)
actions = st.builds(
    lambda aid, name, args: [4, aid, name, args],
    st.one_of(st.integers(1, 50), small_ints, values),
    st.one_of(st.sampled_from(["patch", "nope"]), values),
    values,
)
resyncs = st.builds(lambda e, s: [6, e, s], st.one_of(epoch, values), st.one_of(small_ints, values))
messages = st.one_of(hellos, actions, resyncs)


@st.composite
def mutated(draw: st.DrawFn) -> list[Any]:
    """A well-formed message with one element replaced, dropped or added."""
    message: list[Any] = list(draw(st.one_of(hellos, actions, resyncs)))
    how = draw(st.sampled_from(["replace", "drop", "add", "retype"]))
    i = draw(st.integers(0, len(message) - 1))
    if how == "replace":
        message[i] = draw(values)
    elif how == "drop":
        del message[i]
    elif how == "add":
        message.append(draw(values))
    else:
        message[0] = draw(small_ints)
    return message


def packed(*items: Any) -> bytes:
    return b"".join(msgpack.packb(m, use_bin_type=True) for m in items)


valid_hellos = st.builds(
    lambda role, client, resume: [
        1,
        {"v": 1, "role": role, **({"client": client} if client else {}), **resume},
    ],
    st.sampled_from(["agent", "spectator"]),
    st.one_of(st.none(), st.text(min_size=1, max_size=6)),
    st.one_of(st.just({}), st.builds(lambda e, s: {"resume": [e, s]}, epoch, st.integers(0, 9))),
)
valid_actions = st.builds(
    lambda aid, name, args: [4, aid, name, args],
    st.integers(1, 2**53 - 1),
    st.sampled_from(["patch", "nope"]),
    values,
)
valid_resyncs = st.builds(lambda e, s: [6, e, s], epoch, st.integers(0, 2**53))
well_formed = st.one_of(valid_hellos, valid_actions, valid_resyncs)

frames = st.one_of(
    st.lists(well_formed, min_size=1, max_size=3).map(lambda ms: packed(*ms)),
    st.lists(well_formed, min_size=1, max_size=3).map(lambda ms: packed(*ms)),
    st.binary(max_size=64),
    values.map(packed),
    st.lists(st.one_of(messages, mutated(), values), min_size=1, max_size=3).map(
        lambda ms: packed(*ms)
    ),
    # A valid message with bytes cut off or garbage after it: the frame is checked whole.
    st.tuples(messages, st.integers(1, 8)).map(lambda t: packed(t[0])[: -t[1]] or b"\xc1"),
    st.tuples(messages, st.binary(min_size=1, max_size=4)).map(lambda t: packed(t[0]) + t[1]),
)

# ACTION args that are never a valid patch: not a list, or ops carrying non-state values.
bad_values = st.one_of(
    st.binary(max_size=8),
    st.just(math.nan),
    st.just(math.inf),
    st.integers(min_value=2**53, max_value=2**64 - 1),
    st.dictionaries(st.integers(-3, 3), small_ints, min_size=1, max_size=2),
)
bad_args = st.one_of(
    st.one_of(st.none(), st.booleans(), small_ints, st.text(max_size=4), st.binary(max_size=4)),
    st.dictionaries(st.text(max_size=3), values, max_size=2),
    st.builds(lambda key, v: [[0, [key], v]], st.text(min_size=1, max_size=4), bad_values),
    st.builds(lambda key, v: [[0, [key], {"x": [v]}]], st.text(min_size=1, max_size=4), bad_values),
    st.builds(lambda v: [[0, ["ok"], 1], [0, ["bad"], v]], bad_values),
    st.lists(values, min_size=1, max_size=3).map(lambda ops: [ops]),
)


# --- the environment: a server and an observer that must stay unaffected ----------------------


@dataclass
class Observer:
    """An agent connected throughout: after every example it acts and checks its stream."""

    client: BareClient
    aid: int = 0
    seq: int = 0

    async def check(self) -> None:
        """Act once; every DIFF seen meanwhile is the next seq, and ours arrives before its ACK."""
        self.aid += 1
        await self.client.send([4, self.aid, "patch", [[0, ["observer"], self.aid]]])
        mine = None
        while True:
            message = await self.client.recv(TIMEOUT)
            assert message[0] in (5, 7), message
            if message[0] == 5:
                assert message[1] == self.seq + 1, (message[1], self.seq)
                self.seq = message[1]
                if message[2] == [[0, ["observer"], self.aid]]:
                    mine = message[1]
            else:
                assert message == [7, self.aid, mine], (message, mine)
                return


@dataclass
class FuzzEnv:
    server: RunningServer
    observer: Observer

    @property
    def url(self) -> str:
        return self.server.room_url(ROOM)


@pytest.fixture
async def env() -> AsyncIterator[FuzzEnv]:
    """A server with no rate limit in the way, and the observer joined to the fuzzed room."""
    async with (
        running_server(action_rate=1e9, action_burst=1_000_000_000) as server,
        bare(server.room_url(ROOM)) as client,
    ):
        welcome = await client.hello("agent", client="observer")
        snapshot = await client.recv()
        observer = Observer(client, seq=snapshot[2])
        assert welcome["seq"] == observer.seq
        await observer.check()
        yield FuzzEnv(server, observer)
        await observer.check()


async def closed_with(client: BareClient) -> int | None:
    """Read until the server closes; return its close code."""
    with contextlib.suppress(websockets.ConnectionClosed, TimeoutError):
        while True:
            await client.recv(TIMEOUT)
    return client.ws.close_code


async def answers_to(client: BareClient, data: bytes) -> list[list[Any]]:
    """For an accepted frame: one ACK or ERROR per ACTION in it, in order, then still open."""
    values = split_frame(data)
    assert values is not None
    aids = [v[1] for v in values if v[0] == 4]
    replies = []
    for aid in aids:
        reply = await recv_kind(client, (7, 8))
        assert reply[1] == aid, (reply, aid)
        if reply[0] == 8:
            assert reply[2] in ERROR_CODES, reply
        replies.append(reply)
    # Still open and answering: a RESYNC at a stale epoch gets a SNAPSHOT.
    await client.send([6, "-stale-epoch-", 0])
    await recv_kind(client, (3,))
    return replies


async def join(client: BareClient) -> None:
    await client.hello("agent", client=f"fuzzer-{next(_ids)}")
    assert (await client.recv())[0] == 3


async def recv_kind(client: BareClient, kinds: tuple[int, ...]) -> list[Any]:
    """The next message whose type is one of ``kinds``, skipping DIFFs and the like."""
    while True:
        message = await client.recv(TIMEOUT)
        if message[0] in kinds:
            return message


# --- tests -------------------------------------------------------------------------------------


@FUZZ_SETTINGS
@given(data=frames)
@example(data=packed([1, {"v": 1, "role": []}]))  # found by this test: an unhashable role
@example(data=packed([1, {"v": 1, "role": {"a": 1}}]))
async def test_frame_before_hello(env: FuzzEnv, data: bytes) -> None:
    """Before HELLO a bad frame closes 1007, a well-formed non-HELLO 4000; a valid HELLO joins."""
    outcome = expect(data, after_hello=False)
    event(outcome)
    async with bare(env.url) as client:
        await client.ws.send(data)
        if outcome == MALFORMED:
            assert await closed_with(client) == 1007
        elif outcome == OUT_OF_ORDER:
            assert await closed_with(client) == 4000
        else:
            welcome = await recv_kind(client, (2,))
            assert welcome[1]["epoch"]
    await env.observer.check()


@FUZZ_SETTINGS
@given(data=frames)
async def test_frame_after_hello(env: FuzzEnv, data: bytes) -> None:
    """After HELLO a bad frame closes 1007 and applies nothing, HELLO again 4000, else answers."""
    outcome = expect(data, after_hello=True)
    event(outcome)
    head = env.server.app.rooms.rooms[ROOM].feed.head
    async with bare(env.url) as client:
        await join(client)
        await client.ws.send(data)
        if outcome == MALFORMED:
            assert await closed_with(client) == 1007
            assert env.server.app.rooms.rooms[ROOM].feed.head == head
        elif outcome == OUT_OF_ORDER:
            assert await closed_with(client) == 4000
            assert env.server.app.rooms.rooms[ROOM].feed.head == head
        else:
            await answers_to(client, data)
    await env.observer.check()


@FUZZ_SETTINGS
@given(args=bad_args)
async def test_bad_action_args_get_error_invalid(env: FuzzEnv, args: Any) -> None:
    """A patch whose args are not valid ops gets ERROR invalid, changes nothing, closes nothing."""
    head = env.server.app.rooms.rooms[ROOM].feed.head
    async with bare(env.url) as client:
        await join(client)
        await client.send([4, 1, "patch", args])
        reply = await recv_kind(client, (7, 8))
        assert reply[:3] == [8, 1, "invalid"], reply
        assert env.server.app.rooms.rooms[ROOM].feed.head == head
        # The connection carries on: the next action applies.
        await client.send([4, 2, "patch", [[0, ["fuzzed"], True]]])
        assert (await recv_kind(client, (7, 8)))[:2] == [7, 2]
    await env.observer.check()


@FUZZ_SETTINGS
@given(args=values, name=st.one_of(st.sampled_from(["patch", "nope"]), st.text(max_size=6)))
async def test_random_action_args_never_close(env: FuzzEnv, args: Any, name: str) -> None:
    """Any ACTION args get an ACK or an ERROR with a protocol code, and the connection stays."""
    async with bare(env.url) as client:
        await join(client)
        data = pack([4, 1, name, args])
        await client.ws.send(data)
        [reply] = await answers_to(client, data)
        if name != "patch":
            assert reply[:3] == [8, 1, "unknown_action"]
    await env.observer.check()


async def test_text_frames_close_1003(env: FuzzEnv) -> None:
    """A text frame closes 1003, before HELLO and after it, even if it looks like a message."""
    for after_hello in (False, True):
        async with bare(env.url) as client:
            if after_hello:
                await join(client)
            await client.ws.send('[1, {"v": 1, "role": "agent"}]')
            assert await closed_with(client) == 1003
    await env.observer.check()


async def test_unhashable_map_key_in_args_is_invalid_elsewhere_malformed(env: FuzzEnv) -> None:
    """A map keyed by an array is ERROR invalid inside ACTION args and 1007 anywhere else."""
    array_keyed = b"\x81\x91\x01\x02"  # {[1]: 2}
    async with bare(env.url) as client:
        await join(client)
        await client.ws.send(b"\x94\x04\x01\xa5patch" + array_keyed)
        reply = await recv_kind(client, (7, 8))
        assert reply[:3] == [8, 1, "invalid"]
        await client.ws.send(b"\x93\x06\xa3abc" + array_keyed)
        assert await closed_with(client) == 1007
    await env.observer.check()


@pytest.mark.parametrize("field", ["role", "sync"])
def test_unhashable_welcome_field_is_malformed(field: str) -> None:
    """A WELCOME whose role or sync is a list is malformed (1007), not a crash of the client."""
    body = {"epoch": "e" * 8, "seq": 0, "role": "agent", "client": None, "acked": 0}
    body["sync"] = "snapshot"
    body[field] = [field]
    with pytest.raises(MalformedMessage):
        codec.decode_server_frame(packed([2, body]))

"""A set to the value already there changes nothing: no op, no DIFF, no new seq or ETag."""

from __future__ import annotations

import copy
from typing import Any

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from statecast.protocol.errors import Rejection
from statecast.server.room import ActionContext, Room, action, same_value
from tests.helpers import RunningServer, http_session, running_server
from tests.protocol.strategies import same, values
from tests.server.test_http_api import get, post_action
from tests.server.test_protocol_messages import bystander, joined


async def _state(server: RunningServer, room: str) -> tuple[str, Any]:
    async with http_session() as http:
        status, headers, body = await get(http, f"{server.http_url}/rooms/{room}/state")
        assert status == 200, body
        return headers["ETag"], body


async def test_noop_set_yields_no_diff_and_keeps_the_etag(server: RunningServer) -> None:
    """Setting a value to itself is ACKed with the head; no DIFF reaches anyone; ETag stays."""
    room = "noop-set"
    async with bystander(server, room) as by, joined(server, room, client="n") as (c, _):
        value = {"x": 1, "tags": ["a", 2.5, None, True], "deep": {"k": [{"z": -0.0}]}}
        await c.send([4, 1, "patch", [[0, ["p"], value]]])
        assert await c.recv() == [5, 1, [[0, ["p"], value]]]
        assert await c.recv() == [7, 1, 1]
        etag, body = await _state(server, room)
        assert body["seq"] == 1

        await c.send([4, 2, "patch", [[0, ["p"], copy.deepcopy(value)], [0, ["p", "x"], 1]]])
        assert await c.recv() == [7, 2, 1]  # ACK with the head, and no DIFF before it
        async with http_session() as http:
            status, headers, _ = await get(
                http, f"{server.http_url}/rooms/{room}/state", {"If-None-Match": etag}
            )
            assert (status, headers["ETag"]) == (304, etag)
        # The bystander's next message is the DIFF of its own action: seq 2, nothing between.
        assert await by.client.recv() == [5, 1, [[0, ["p"], value]]]
        assert await by.served() == 2


async def test_a_patch_that_changes_something_is_one_diff_with_exactly_its_ops(
    server: RunningServer,
) -> None:
    """§9.1: an applied patch is one DIFF with exactly its ops, no-op sets included, as long
    as one of them changes something."""
    room = "noop-mixed"
    async with joined(server, room, client="m") as (c, _):
        await c.send([4, 1, "patch", [[0, ["a"], 1], [0, ["b"], {"k": [1, 2]}]]])
        assert (await c.recv())[0] == 5
        assert await c.recv() == [7, 1, 1]
        patch = [
            [0, ["a"], 1],  # the same
            [0, ["a"], 2],  # a change
            [0, ["b", "k", 1], 2],  # the same list item
            [2, ["b", "k", -1], 3],  # an insert is always a change
            [0, ["a"], 2],  # the same as the op before it left it
        ]
        await c.send([4, 2, "patch", patch])
        assert await c.recv() == [5, 2, patch]
        assert await c.recv() == [7, 2, 2]
        _, body = await _state(server, room)
        assert body["state"] == {"a": 2, "b": {"k": [1, 2, 3]}}


async def test_equality_is_by_msgpack_type_and_ignores_map_key_order(
    server: RunningServer,
) -> None:
    """1, 1.0 and True are different values, as are 0.0 and -0.0; a reordered map is not."""
    room = "noop-types"
    async with joined(server, room, client="t") as (c, _):
        aid = 0

        async def act(value: Any) -> list[Any]:
            nonlocal aid
            aid += 1
            await c.send([4, aid, "patch", [[0, ["v"], value]]])
            messages = [await c.recv()]
            if messages[0][0] == 5:
                messages.append(await c.recv())
            assert messages[-1][:2] == [7, aid], messages
            return messages

        seq = 0
        for value in (1, 1.0, True, 0.0, -0.0, {"a": 1, "b": 2}):
            seq += 1
            assert await act(value) == [[5, seq, [[0, ["v"], value]]], [7, aid, seq]]
        assert await act({"b": 2, "a": 1}) == [[7, aid, seq]]
        # The state keeps the order it had: its bytes, its ETag and its seq are unchanged.
        _, body = await _state(server, room)
        assert list(body["state"]["v"]) == ["a", "b"]


async def test_http_noop_action_answers_the_head() -> None:
    """POST /actions with a no-op set answers {"seq": head}; the changefeed has no new entry."""
    async with running_server() as server, http_session() as http:
        args = [[0, ["n"], 5]]
        body = {"client": "h", "aid": 1, "name": "patch", "args": args}
        assert await post_action(http, server, "noop-http", body) == (200, {"seq": 1})
        body = {"client": "h", "aid": 2, "name": "patch", "args": args}
        assert await post_action(http, server, "noop-http", body) == (200, {"seq": 1})
        etag, state = await _state(server, "noop-http")
        epoch = state["epoch"]
        assert etag == f'"{epoch}:1"'
        url = f"{server.http_url}/rooms/noop-http/changes?epoch={epoch}&since=1"
        status, _, feed = await get(http, url)
        assert (status, feed["changes"]) == (200, [])


async def test_noop_before_a_refused_op_still_changes_nothing(server: RunningServer) -> None:
    """All or nothing still holds when a dropped set precedes an op that fails."""
    room = "noop-refused"
    async with joined(server, room, client="r") as (c, _):
        await c.send([4, 1, "patch", [[0, ["a"], 1]]])
        await c.recv()
        assert await c.recv() == [7, 1, 1]
        await c.send([4, 2, "patch", [[0, ["a"], 1], [0, ["b"], 2], [1, ["missing"]]]])
        error = await c.recv()
        assert error[:3] == [8, 2, "invalid"]
        _, body = await _state(server, room)
        assert (body["seq"], body["state"]) == (1, {"a": 1})


class Touch(Room):
    """A room type whose handler re-sets what is there: its action must not wake anyone."""

    def initial_state(self) -> dict[str, Any]:
        return {"n": 0, "who": None}

    @action("touch")
    def touch(self, ctx: ActionContext, args: Any) -> None:
        if type(args) is not int:
            raise Rejection("invalid", "touch takes an int")
        ctx.set(["n"], args)
        ctx.set(["who"], ctx.client if args else None)


async def test_room_type_handler_noop_set_records_nothing() -> None:
    spec = f"touch-*={__name__}:Touch"
    async with (
        running_server(room_types=(spec,)) as server,
        joined(server, "touch-1", client="a") as (c, _),
    ):
        await c.send([4, 1, "touch", 0])
        assert await c.recv() == [7, 1, 0]
        await c.send([4, 2, "touch", 3])
        assert await c.recv() == [5, 1, [[0, ["n"], 3], [0, ["who"], "a"]]]
        assert await c.recv() == [7, 2, 1]
        room = server.app.rooms.rooms["touch-1"].writer.room
        assert room.state_bytes == len(msgpack.packb(room.state, use_bin_type=True))


@given(values, values)
def test_same_value_is_equality_of_msgpack_values(a: Any, b: Any) -> None:
    """same_value agrees with an independent typed equality, and with itself on a copy."""
    assert same_value(a, copy.deepcopy(a))
    assert same_value(a, b) == same(a, b)


@given(st.dictionaries(st.text(max_size=3), values, max_size=6), st.randoms())
def test_same_value_ignores_key_order(doc: dict[str, Any], rng: Any) -> None:
    items = list(doc.items())
    rng.shuffle(items)
    assert same_value(doc, dict(items))

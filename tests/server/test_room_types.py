"""Room types beyond the built-in document room: what a handler may rely on."""

from __future__ import annotations

import copy
from typing import Any

import msgpack
import pytest
from structlog.testing import capture_logs

from statecast import connect
from statecast.protocol.errors import Rejection
from statecast.server.room import ActionContext, Room, action
from tests.helpers import bare, http_session, running_server

ROOM = "fallback-1"


class FallbackRoom(Room):
    """A handler that tries a change and, when the room refuses it, makes another instead."""

    @action("try")
    def try_(self, ctx: ActionContext, args: Any) -> None:
        try:
            ctx.set(["a", 0], 1)  # creates map "a" on its way, then an int cannot index it
        except Rejection:
            ctx.set(["b"], 1)


async def test_refused_op_that_a_handler_catches_leaves_no_trace() -> None:
    """An op refused part way is undone at once: a handler that goes on publishes its state."""
    spec = f"fallback-*={__name__}:FallbackRoom"
    async with running_server(room_types=(spec,)) as server, bare(server.room_url(ROOM)) as agent:
        await agent.hello("agent", client="a")
        await agent.recv_type(3)
        await agent.send([4, 1, "try", None])
        assert await agent.recv() == [5, 1, [[0, ["b"], 1]]]
        assert await agent.recv() == [7, 1, 1]
        async with (
            http_session() as http,
            http.get(f"{server.http_url}/rooms/{ROOM}/state") as resp,
        ):
            assert (await resp.json())["state"] == {"b": 1}
        room = server.app.rooms.rooms[ROOM].writer.room
        assert room.state_bytes == len(msgpack.packb(room.state, use_bin_type=True))


@pytest.mark.parametrize("what", ["action", "on_join"])
def test_an_async_handler_is_refused_where_the_type_is_defined(what: str) -> None:
    """An async handler would never be awaited (its coroutine dropped, the action a no-op):
    defining such a room type fails at once, saying handlers are synchronous and why."""
    with pytest.raises(TypeError) as refused:
        if what == "action":

            class Claims(Room):
                @action("claim")
                async def claim(self, ctx: ActionContext, args: Any) -> None:
                    ctx.set(["owner"], ctx.client)

        else:

            class Greets(Room):
                async def on_join(self, ctx: ActionContext) -> None:  # type: ignore[override]
                    ctx.set(["hello"], ctx.client)

    message = str(refused.value)
    assert "is async: room handlers and hooks are synchronous" in message
    assert "one action at a time" in message


class InPlaceBoard(Room):
    """A task board whose handlers (wrongly) change the state in place, and rightly through ctx."""

    def initial_state(self) -> dict[str, Any]:
        return {"tasks": {"t1": {"owner": None}}, "log": []}

    @action("grab")
    def grab(self, ctx: ActionContext, args: Any) -> None:
        ctx.set(["log"], ["grabbing"])  # recorded first: the refusal must undo it too
        ctx.state["tasks"]["t1"]["owner"] = ctx.client

    @action("note")
    def note(self, ctx: ActionContext, args: Any) -> None:
        self.state["log"].append(args)

    @action("claim")
    def claim(self, ctx: ActionContext, args: Any) -> None:
        tasks = copy.deepcopy(ctx.state["tasks"])  # a private copy may be changed freely
        tasks["t1"]["owner"] = ctx.client
        ctx.set(["tasks"], tasks)
        ctx.set(["before"], ctx.state["log"])  # a view is copied like any value


@pytest.mark.parametrize(
    ("name", "where"),
    [("grab", "state['tasks']['t1']"), ("note", "state['log']")],
)
async def test_a_handler_that_changes_the_state_in_place_is_refused_and_changes_nothing(
    name: str, where: str
) -> None:
    """ctx.state and self.state are read-only in a handler: an in-place change is refused
    with invalid naming ctx.set, logged naming the path, and the state stays as it was for
    GET /state and for a later joiner alike (no seq names two states)."""
    spec = f"inplace-*={__name__}:InPlaceBoard"
    async with running_server(room_types=(spec,)) as server:
        async with connect(server.room_url("inplace-1"), client="a") as agent:
            with capture_logs() as logs, pytest.raises(Rejection) as refused:
                await agent.act(name, "x")
            assert refused.value.code == "invalid"
            assert "ctx.set" in refused.value.message
            assert agent.seq == 0
            assert await agent.act("claim", None) == 1  # the session goes on
        errors = [e for e in logs if e["log_level"] == "error"]
        assert len(errors) == 1
        assert "ctx.set" in errors[0]["event"]
        assert where in errors[0]["error"]
        expected = {"tasks": {"t1": {"owner": "a"}}, "log": [], "before": []}
        async with (
            http_session() as http,
            http.get(f"{server.http_url}/rooms/inplace-1/state") as resp,
        ):
            body = await resp.json()
        assert (body["seq"], body["state"]) == (1, expected)
        async with connect(server.room_url("inplace-1"), role="spectator") as later:
            assert (later.seq, later.state) == (1, expected)

"""``statecast mcp`` over stdio, launched by the official MCP client as a host launches it,
against one real ``statecast serve`` for the module (each test in a room of its own)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import mcp_types as types
import pytest
import pytest_asyncio
from mcp.client.subscriptions import listen
from mcp.shared.exceptions import MCPDeprecationWarning

from statecast import connect
from tests.helpers import TIMEOUT, http_session
from tests.mcp.harness import CREW_TYPE, EXAMPLES, Agent, readable, seat_args, stdio_agent
from tests.serve_process import ServeProcess, serve_process

pytestmark = pytest.mark.asyncio(loop_scope="module")

READERS = {"get_state", "changes_since", "wait_for_change", "room_info"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[ServeProcess]:
    async with serve_process("--room-type", CREW_TYPE, cwd=EXAMPLES) as running:
        yield running


@contextlib.asynccontextmanager
async def seat(server: ServeProcess, room: str) -> AsyncIterator[Agent]:
    """Agent ``a``'s seat in ``room``, over stdio; the test fails rather than hang."""
    async with asyncio.timeout(TIMEOUT * 4), stdio_agent(*seat_args(server, room, "a")) as agent:
        yield agent


async def http_json(server: ServeProcess, path: str) -> Any:
    async with http_session() as http, http.get(f"{server.http_url}{path}") as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_the_tools_are_the_room_types_actions_and_the_readers(server: ServeProcess) -> None:
    async with seat(server, "crew-tools") as agent:
        tools = {tool.name: tool for tool in (await agent.session.list_tools()).tools}
        assert set(tools) == READERS | {"add_task", "claim", "finish"}
        claim = tools["claim"]
        assert claim.description is not None
        assert claim.description.startswith("Claim an open task, so that no other agent works")
        schema = claim.input_schema
        assert schema["type"] == "object"
        assert schema["required"] == ["task"]
        assert schema["properties"]["task"]["type"] == "string"
        assert schema["properties"]["task"]["description"].startswith("The task's id")
        assert schema["properties"]["key"]["type"] == "string"
        finish = tools["finish"].input_schema
        assert sorted(finish["required"]) == ["result", "task"]
        assert tools["get_state"].annotations is not None
        assert tools["get_state"].annotations.read_only_hint is True


async def test_an_action_answers_seq_and_answer_and_get_state_is_http_state(
    server: ServeProcess,
) -> None:
    async with seat(server, "crew-act") as agent:
        added = await agent.call("add_task", title="write the docs")
        assert added["seq"] == 1 and added["answer"] == "t1"
        claimed = await agent.call("claim", task="t1")
        assert claimed["seq"] == 2 and claimed["answer"] == "write the docs"
        state = await agent.call("get_state")
        assert state["seq"] == 2
        assert state == await http_json(server, "/rooms/crew-act/state")
        head = await http_json(server, "/rooms/crew-act/head")
        owner = await agent.call("get_state", path=["tasks", "t1", "owner"])
        path = ["tasks", "t1", "owner"]
        assert owner == {"seq": 2, "epoch": head["epoch"], "path": path, "value": "a"}
        missing = await agent.error("get_state", path=["tasks", "t9"])
        assert missing["code"] == "no_such_path"


async def test_refusals_and_bad_arguments_are_tool_errors_the_model_can_read(
    server: ServeProcess,
) -> None:
    async with seat(server, "crew-refuse") as agent:
        refused = await agent.error("claim", task="t9")
        assert refused["code"] == "invalid"
        assert "no task 't9'" in refused["message"]
        await agent.call("add_task", title="x")
        async with connect(server.room_url("crew-refuse"), client="b") as other:
            await other.call("claim", {"task": "t1"})
        conflict = await agent.error("claim", task="t1")
        assert conflict["code"] == "conflict"
        bad = await agent.error("claim", tusk="t1")
        assert bad["code"] == "invalid"
        assert "'task' is a required property" in bad["message"]
        unknown = await agent.error("no_such_tool")
        assert unknown["code"] == "unknown_tool"
        assert "claim" in unknown["message"]


async def test_changes_since_is_the_net_change(server: ServeProcess) -> None:
    async with seat(server, "crew-net") as agent:
        first = await agent.call("add_task", title="one")
        await agent.call("add_task", title="two")
        await agent.call("claim", task="t1")
        async with connect(server.room_url("crew-net"), client="b") as other:
            await other.call("claim", {"task": "t2"})
            await other.call("finish", {"task": "t2", "result": "done"})
            head = other.seq
        since = first["seq"]
        net = await agent.call("changes_since", seq=since)
        epoch = (await http_json(server, "/rooms/crew-net/head"))["epoch"]
        body = await http_json(
            server, f"/rooms/crew-net/changes?epoch={epoch}&since={since}&compact=1"
        )
        assert net == {"since": since, "seq": head, "changes": readable(body["ops"])}
        assert {"path": ["tasks", "t2"], "value": {
            "title": "two", "owner": "b", "done": True, "result": "done",
        }} in net["changes"]  # fmt: skip
        nothing = await agent.call("changes_since", seq=head)
        assert nothing == {"since": head, "seq": head, "changes": []}
        ahead = await agent.error("changes_since", seq=head + 5)
        assert ahead["code"] == "ahead"


async def test_the_state_resource_and_its_update_notification(server: ServeProcess) -> None:
    async with seat(server, "crew-res") as agent:
        listed = (await agent.session.list_resources()).resources
        assert [r.uri for r in listed] == [f"statecast://{server.ws_url[5:]}/rooms/crew-res/state"]
        uri = listed[0].uri
        await agent.call("add_task", title="one")
        read = (await agent.session.read_resource(uri)).contents[0]
        assert isinstance(read, types.TextResourceContents)
        body = json.loads(read.text)
        assert body["seq"] == 1 and read.meta is not None and read.meta["statecast/seq"] == 1
        assert body == await http_json(server, "/rooms/crew-res/state")
        # The 2025 way, which hosts use today; the SDK warns that 2026-07-28 replaced it.
        with pytest.warns(MCPDeprecationWarning, match="resources/subscribe"):
            await agent.session.subscribe_resource(uri)
        async with connect(server.room_url("crew-res"), client="b") as other:
            await other.call("add_task", {"title": "two"})
            await agent.updated(uri)
        read = (await agent.session.read_resource(uri)).contents[0]
        assert isinstance(read, types.TextResourceContents)
        assert json.loads(read.text)["state"]["tasks"]["t2"]["title"] == "two"


async def test_a_2026_host_listens_for_the_state_resource(server: ServeProcess) -> None:
    """The 2026-07-28 era: no session, no resources/subscribe; a subscriptions/listen
    stream carries the updates."""
    args = seat_args(server, "crew-listen", "a")
    async with asyncio.timeout(TIMEOUT * 4), stdio_agent(*args, era="2026") as agent:
        uri = (await agent.session.list_resources()).resources[0].uri
        await agent.call("add_task", title="one")
        async with listen(agent.session, resource_subscriptions=[uri]) as events:
            async with connect(server.room_url("crew-listen"), client="b") as other:
                await other.call("add_task", {"title": "two"})
            event = await anext(aiter(events))
            assert getattr(event, "uri", None) == uri


async def test_wait_for_change_answers_when_another_agent_acts(server: ServeProcess) -> None:
    async with seat(server, "crew-wait") as agent:
        seq = (await agent.call("add_task", title="one"))["seq"]
        quiet = await agent.call("wait_for_change", seq=seq, timeout=0.2)
        assert quiet == {"changed": False, "since": seq, "seq": seq, "changes": []}
        waiting = asyncio.create_task(
            agent.call("wait_for_change", seq=seq, path=["tasks", "t1"], timeout=TIMEOUT * 2)
        )
        async with connect(server.room_url("crew-wait"), client="b") as other:
            await other.call("add_task", {"title": "elsewhere"})  # not under the path
            await other.call("claim", {"task": "t1"})
            head = other.seq
        changed = await waiting
        assert changed["changed"] is True and changed["seq"] == head
        assert changed["changes"] == [{"path": ["tasks", "t1", "owner"], "value": "b"}]


async def test_a_retry_with_the_same_key_answers_the_first_outcome(server: ServeProcess) -> None:
    async with seat(server, "crew-key") as agent:
        first = await agent.call("add_task", title="once", key="call-1")
        again = await agent.call("add_task", title="once", key="call-1")
        assert again == {**first, "retried": True}
        assert first["answer"] == "t1"
        state = await agent.call("get_state")
        assert list(state["state"]["tasks"]) == ["t1"]
        reused = await agent.error("add_task", title="other", key="call-1")
        assert reused["code"] == "key_reused"
        second = await agent.call("add_task", title="twice", key="call-2")
        assert second["answer"] == "t2"


async def test_the_document_room_patch_tool(server: ServeProcess) -> None:
    async with seat(server, "notes") as agent:
        tools = {tool.name: tool for tool in (await agent.session.list_tools()).tools}
        assert set(tools) == READERS | {"patch"}
        patch = tools["patch"]
        assert patch.description is not None and '"set" puts value at path' in patch.description
        done = await agent.call("patch", ops=[
            {"op": "set", "path": ["title"], "value": "notes"},
            {"op": "set", "path": ["items"], "value": ["a", "c"]},
            {"op": "insert", "path": ["items", 1], "value": "b"},
            {"op": "set", "path": ["draft"], "value": True},
            {"op": "delete", "path": ["draft"]},
        ])  # fmt: skip
        assert done["seq"] == 1
        state = await agent.call("get_state")
        assert state["state"] == {"title": "notes", "items": ["a", "b", "c"]}
        assert state == await http_json(server, "/rooms/notes/state")
        refused = await agent.error("patch", ops=[{"op": "delete", "path": ["nothing"]}])
        assert refused["code"] == "invalid"
        bad = await agent.error("patch", ops=[{"op": "move", "path": ["title"]}])
        assert bad["code"] == "invalid" and "move" in bad["message"]
        info = await agent.call("room_info")
        assert info["type"] == "statecast.server.rooms.document:DocumentRoom"
        assert info["actions"] == ["patch"] and info["agents"] == ["a"] and info["seq"] == 1


async def test_a_seat_with_a_view_sees_only_its_part(server: ServeProcess) -> None:
    """``--view``: get_state and changes_since hold only the seat's part of the room."""
    view = json.dumps([["board"]])
    async with connect(server.room_url("viewed"), client="b") as other:
        await other.act("patch", [[0, ["board"], {"a1": "x"}], [0, ["notes"], "SECRET"]])
        async with (
            asyncio.timeout(TIMEOUT * 4),
            stdio_agent(*seat_args(server, "viewed", "a", "--view", view)) as agent,
        ):
            state = await agent.call("get_state")
            assert state["state"] == {"board": {"a1": "x"}}
            since = state["seq"]
            await other.act("patch", [[0, ["board", "b2"], "o"], [0, ["notes"], "SECRET-2"]])
            net = await agent.call("wait_for_change", seq=since, timeout=10)
            changes = await agent.call("changes_since", seq=since)
            assert changes["changes"] == [{"path": ["board", "b2"], "value": "o"}]
            assert "SECRET" not in json.dumps([net, changes])
            # Its own action out of its sight: answered, never left pending.
            done = await agent.call("patch", ops=[{"op": "set", "path": ["notes"], "value": "x"}])
            assert done["seq"] > changes["seq"] and "outcome" not in done
            # A seq a tool answered is never "ahead", though the view's copy stays behind it.
            later = await agent.call("changes_since", seq=done["seq"])
            assert later["changes"] == []
            # A value the wire cannot carry: a tool error the model reads, not a crash.
            huge = await agent.error("patch", ops=[{"op": "set", "path": ["n"], "value": 10**30}])
            assert huge["code"] in ("internal", "invalid")

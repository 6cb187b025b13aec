"""How a room type's handlers become tools (statecast.mcp_server.tools): names, schemas
from type hints or given explicitly, and how a tool's arguments become the action's args."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from statecast import ActionContext, Room, action
from statecast.mcp_server.tools import BUILT_IN, action_tools
from statecast.server.rooms.document import DocumentRoom, PresenceDocumentRoom


class Mixed(Room):
    action_schemas: ClassVar[dict[str, dict[str, Any]]] = {
        "move": {
            "type": "object",
            "properties": {"dx": {"type": "integer"}, "dy": {"type": "integer"}},
            "required": ["dx", "dy"],
            "additionalProperties": False,
        }
    }

    @action("add")
    def add(self, ctx: ActionContext, args: int) -> None:
        """Add to the counter."""

    @action("move")
    def move(self, ctx: ActionContext, args: Any) -> None:
        """Move by dx, dy."""

    @action("anything")
    def anything(self, ctx: ActionContext, args: Any) -> None:
        pass

    @action("get_state")
    def shadowed(self, ctx: ActionContext, args: list[str]) -> None:
        """An action named like a built-in tool."""

    @action("say hello")
    def hello(self, ctx: ActionContext) -> None:
        """No args at all."""


def tools_of(room_type: type[Room] | None, names: list[str] | None = None) -> dict[str, Any]:
    return {tool.name: tool for tool in action_tools(room_type, names or [])}


def test_schemas_from_hints_and_explicit_ones() -> None:
    tools = tools_of(Mixed)
    assert set(tools) == {"add", "move", "anything", "action_get_state", "action_say_hello"}
    add = tools["add"]
    assert add.description == "Add to the counter."
    assert add.input_schema["properties"]["args"] == {"type": "integer"}
    assert add.input_schema["required"] == ["args"]
    assert add.args({"args": 3, "key": "k"}) == 3
    with pytest.raises(ValueError, match="args: 'three' is not of type 'integer'"):
        add.args({"args": "three"})
    move = tools["move"]
    assert move.input_schema["required"] == ["dx", "dy"]
    assert set(move.input_schema["properties"]) == {"dx", "dy", "key"}
    assert move.args({"dx": 1, "dy": -1, "key": "k"}) == {"dx": 1, "dy": -1}
    anything = tools["anything"]
    assert anything.description == "Run the room's 'anything' action."
    assert anything.args({"args": {"free": ["form"]}}) == {"free": ["form"]}
    shadowed = tools["action_get_state"]
    assert shadowed.action == "get_state" and "get_state" in BUILT_IN
    assert shadowed.description.startswith("(Runs the room's action 'get_state'.)")
    hello = tools["action_say_hello"]
    assert set(hello.input_schema["properties"]) == {"key"}
    assert hello.args({}) is None


def test_a_room_type_not_importable_gets_tools_taking_any_args() -> None:
    tools = tools_of(None, ["claim", "finish"])
    assert set(tools) == {"claim", "finish"}
    assert "not importable here" in tools["claim"].description
    assert tools["claim"].args({"args": {"task": "t1"}}) == {"task": "t1"}


def test_the_document_rooms_patch_becomes_wire_ops() -> None:
    patch = tools_of(DocumentRoom)["patch"]
    wire = patch.args(
        {
            "ops": [
                {"op": "set", "path": ["a"], "value": 1},
                {"op": "insert", "path": ["l", -1], "value": "x"},
                {"op": "delete", "path": ["b"]},
            ]
        }
    )
    assert wire == [[0, ["a"], 1], [2, ["l", -1], "x"], [1, ["b"]]]
    with pytest.raises(ValueError, match="'move' is not one of"):
        patch.args({"ops": [{"op": "move", "path": ["a"]}]})


def test_the_presence_document_room_says_who_keeps_presence() -> None:
    assert "presence" not in tools_of(DocumentRoom)["patch"].description
    assert 'The server keeps "presence"' in tools_of(PresenceDocumentRoom)["patch"].description

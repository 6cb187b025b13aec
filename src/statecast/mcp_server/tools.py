"""The tools a room's type gives the model: one per action, and the room's own readers.

An action's tool is named after the action, described by its handler's docstring, and
takes what the handler's ``args`` type hint says, as a JSON Schema (pydantic writes it:
a ``TypedDict``, a dataclass or a pydantic model becomes the tool's arguments; any
other type is the tool's one ``args`` argument). A room type can give an action's
schema itself in ``action_schemas = {"name": {...JSON Schema of args...}}``. Every
action tool also takes ``key``, the idempotency key (statecast.mcp_server.ledger).

The built-in document room's ``patch`` is described plainly: a list of
``{"op": "set" | "delete" | "insert", "path": [...], "value": ...}``, turned into the
wire's ops here.
"""

from __future__ import annotations

import copy
import inspect
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import jsonschema
import structlog
from pydantic import PydanticUserError, TypeAdapter

from statecast.protocol import ops
from statecast.server.room import Room
from statecast.server.rooms.document import PRESENCE_KEY, DocumentRoom, PresenceDocumentRoom

log = structlog.get_logger("statecast.mcp")

#: The tools every seat has; an action of the same name gets an ``action_`` prefix.
BUILT_IN: Final = ("get_state", "changes_since", "wait_for_change", "room_info")
#: MCP tool names (2025-11-25): 1 to 128 of these characters.
TOOL_NAME: Final = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
KEY_PROPERTY: Final = {
    "type": "string",
    "minLength": 1,
    "maxLength": 200,
    "description": "Idempotency key: repeat it when retrying this same call and the action "
    "takes effect once, the retry answering the first call's outcome. A new call needs a new "
    "key (default: the MCP request id).",
}
PATH_SCHEMA: Final = {
    "type": "array",
    "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
    "description": "Keys (strings) and list indexes (integers) from the state's root, "
    'e.g. ["tasks", "t1"]',
}
PATCH_DESCRIPTION: Final = """\
Change the room's document: the ops apply in order, all or nothing (if one cannot
apply, none does and the call answers why). "set" puts value at path (creating the maps
on the way); "delete" removes what is at path; "insert" puts value into a list at path
(its last segment is the index; -1 appends). Paths are lists of map keys and list indexes
from the root, e.g. ["tasks", "t1", "owner"]."""
PATCH_SCHEMA: Final = {
    "type": "object",
    "properties": {
        "ops": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "op": {"enum": ["set", "delete", "insert"]},
                    "path": {**PATH_SCHEMA, "minItems": 1},
                    "value": {"description": "the value, for set and insert (any JSON)"},
                },
                "required": ["op", "path"],
                "additionalProperties": False,
            },
        },
        "key": KEY_PROPERTY,
    },
    "required": ["ops"],
    "additionalProperties": False,
}
_OP_KINDS: Final = {"set": ops.SET, "delete": ops.DEL, "insert": ops.INS}


@dataclass(frozen=True)
class ActionTool:
    """One action as a tool: how the model calls it and how its arguments become args."""

    name: str
    action: str
    description: str
    input_schema: dict[str, Any]
    #: The tool's arguments are the args (a map), less ``key``; else they are ``args``.
    flat: bool
    patch: bool = False

    def args(self, arguments: Mapping[str, Any]) -> Any:
        """The action's args from the tool's arguments, checked against its schema first
        (a ValueError saying what is wrong)."""
        check_arguments(self.input_schema, arguments)
        if self.patch:
            return [
                [_OP_KINDS[op["op"]], op["path"], op.get("value")]
                if op["op"] != "delete"
                else [ops.DEL, op["path"]]
                for op in arguments["ops"]
            ]
        if self.flat:
            return {k: v for k, v in arguments.items() if k != "key"}
        return arguments.get("args")


def handlers(room_type: type[Room]) -> dict[str, Any]:
    """Action name -> handler function, as the room registers them (the most derived wins)."""
    found: dict[str, Any] = {}
    for klass in reversed(room_type.__mro__):
        for fn in vars(klass).values():
            name = getattr(fn, "__statecast_action__", None)
            if name is not None:
                found[name] = fn
    return found


def args_schema(fn: Any) -> dict[str, Any] | None:
    """The JSON Schema of a handler's ``args`` from its type hint (None: no usable hint)."""
    params = list(inspect.signature(fn).parameters.values())
    if len(params) < 3:
        return {"type": "null"}
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # a hint that does not resolve here: fall back to any args
        return None
    hint = hints.get(params[2].name)
    if hint is None or hint is Any:
        return None
    try:
        schema: dict[str, Any] = TypeAdapter(hint).json_schema()
    except PydanticUserError as exc:  # e.g. typing.TypedDict before Python 3.12
        log.warning("mcp_args_schema_unusable", handler=fn.__qualname__, error=str(exc))
        return None
    return schema


def _is_object(schema: Mapping[str, Any]) -> bool:
    return schema.get("type") == "object" and "key" not in schema.get("properties", {})


def action_tool(
    tool_name: str, action: str, fn: Any, explicit: Mapping[str, Any] | None
) -> ActionTool:
    doc = inspect.getdoc(fn) or f"Run the room's {action!r} action."
    if tool_name != action:
        doc = f"(Runs the room's action {action!r}.) {doc}"
    schema = dict(explicit) if explicit is not None else args_schema(fn)
    if schema is not None and _is_object(schema):
        flat = copy.deepcopy(schema)
        flat.pop("title", None)
        flat.setdefault("properties", {})["key"] = KEY_PROPERTY
        return ActionTool(tool_name, action, doc, flat, flat=True)
    wrapped: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
    if schema is None:
        wrapped["properties"]["args"] = {"description": "the action's arguments (any JSON)"}
    elif schema != {"type": "null"}:
        inner = copy.deepcopy(schema)
        defs = inner.pop("$defs", None)
        if defs:
            wrapped["$defs"] = defs
        wrapped["properties"]["args"] = inner
        wrapped["required"] = ["args"]
    wrapped["properties"]["key"] = KEY_PROPERTY
    return ActionTool(tool_name, action, doc, wrapped, flat=False)


def _tool_name(action: str, taken: set[str]) -> str:
    name = action if TOOL_NAME.match(action) and action not in BUILT_IN else ""
    if not name:
        base = "action_" + re.sub(r"[^A-Za-z0-9_.-]", "_", action)[:100]
        name, n = base, 2
        while name in taken or name in BUILT_IN:
            name, n = f"{base}_{n}", n + 1
    return name


def action_tools(room_type: type[Room] | None, action_names: list[str]) -> list[ActionTool]:
    """The tools for a room's actions. Without the room type (not importable here), each
    listed action gets a tool taking any ``args``."""
    found = handlers(room_type) if room_type is not None else {}
    explicit: Mapping[str, Any] = getattr(room_type, "action_schemas", None) or {}
    tools: list[ActionTool] = []
    taken: set[str] = set()
    for action in sorted(set(action_names) | set(found)):
        name = _tool_name(action, taken)
        taken.add(name)
        fn = found.get(action)
        if room_type is not None and issubclass(room_type, DocumentRoom) and action == "patch":
            doc = PATCH_DESCRIPTION
            if issubclass(room_type, PresenceDocumentRoom):
                doc += (
                    f' The server keeps "{PRESENCE_KEY}" (who is here): a patch touching it is '
                    "refused."
                )
            tools.append(ActionTool(name, action, doc, PATCH_SCHEMA, False, True))
        elif fn is None:
            doc = f"Run the room's {action!r} action (its room type is not importable here)."
            tools.append(action_tool(name, action, _Unknown(doc), None))
        else:
            tools.append(action_tool(name, action, fn, explicit.get(action)))
    return tools


class _Unknown:
    """A stand-in handler for an action whose room type is not importable here."""

    def __init__(self, doc: str) -> None:
        self.__doc__ = doc

    def __call__(self, room: Any, ctx: Any, args: Any) -> None:
        raise NotImplementedError


READERS: Final[list[tuple[str, str, dict[str, Any]]]] = [
    (
        "get_state",
        "The room's state (or the part at path) and its seq. Pass the seq to changes_since or "
        "wait_for_change later to learn what changed since.",
        {"type": "object", "properties": {"path": PATH_SCHEMA}, "additionalProperties": False},
    ),
    (
        "changes_since",
        "What changed since a seq (one that a tool answered): each touched path with its new "
        "value, or removed, net of everything between, and the current seq.",
        {
            "type": "object",
            "properties": {"seq": {"type": "integer", "minimum": 0}},
            "required": ["seq"],
            "additionalProperties": False,
        },
    ),
    (
        "wait_for_change",
        "Wait until the state (or the part under path) differs from what it was at seq, then "
        "answer what changed and the current seq; after timeout seconds, changed is false.",
        {
            "type": "object",
            "properties": {
                "seq": {"type": "integer", "minimum": 0},
                "path": PATH_SCHEMA,
                "timeout": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "maximum": 300,
                    "default": 25,
                    "description": "seconds to wait at most (default 25)",
                },
            },
            "required": ["seq"],
            "additionalProperties": False,
        },
    ),
    (
        "room_info",
        "The room: its type, its actions, the agents present, the spectator count and the seq.",
        {"type": "object", "properties": {}, "additionalProperties": False},
    ),
]


def check_arguments(schema: Mapping[str, Any], arguments: Mapping[str, Any]) -> None:
    """Raise ValueError naming each argument that does not fit ``schema`` (five at most)."""
    validator = jsonschema.Draft202012Validator(schema)
    problems = [
        f"{'/'.join(map(str, e.absolute_path)) or 'arguments'}: {e.message}"
        for e in validator.iter_errors(dict(arguments))
    ]
    if problems:
        raise ValueError("; ".join(sorted(problems)[:5]))

"""A room type written for LLM agents (docs/agents.md): ``statecast mcp`` shows each
action to the model as a tool, described by the handler's docstring, its arguments
from the ``args`` type hint (a TypedDict: one tool argument per key, each described by
its docstring).

    statecast serve --room-type 'crew-*=mypackage.agents:TaskBoard'
"""

import sys
from typing import Any

from statecast import ActionContext, Rejection, Room, action

if sys.version_info >= (3, 12):
    from typing import TypedDict
else:  # pydantic, which writes the tools' schemas, needs this one before 3.12
    from typing_extensions import TypedDict

#: Read by statecast mcp (through pydantic): each key's docstring describes it.
DOCUMENTED = {"use_attribute_docstrings": True}


class AddTask(TypedDict):
    title: str
    """What is to be done, in one line."""


class TaskRef(TypedDict):
    task: str
    """The task's id, as add_task answered it (e.g. "t1")."""


class Finish(TypedDict):
    task: str
    """The task's id (e.g. "t1"); you must hold it (claim it first)."""
    result: str
    """What came of it, in a few words."""


for _args in (AddTask, TaskRef, Finish):
    _args.__pydantic_config__ = DOCUMENTED  # type: ignore[attr-defined]


class TaskBoard(Room):
    """Tasks that agents add, claim and finish: ``{"tasks": {id: {...}}, "next": n}``."""

    def initial_state(self) -> dict[str, Any]:
        return {"tasks": {}, "next": 1}

    @action("add_task")
    def add_task(self, ctx: ActionContext, args: AddTask) -> str:
        """Add a task to the board, open for anyone to claim. Answers the new task's id."""
        title = _field(args, "title")
        task = f"t{ctx.state['next']}"
        ctx.set(["tasks", task], {"title": title, "owner": None, "done": False, "result": None})
        ctx.set(["next"], ctx.state["next"] + 1)
        return task

    @action("claim")
    def claim(self, ctx: ActionContext, args: TaskRef) -> str:
        """Claim an open task, so that no other agent works on it. Refused (conflict) if
        another agent holds it or it is done. Answers the task's title."""
        task = self._task(ctx, _field(args, "task"))
        if task["done"] or task["owner"] not in (None, ctx.client):
            raise Rejection("conflict", f"{args['task']} is held by {task['owner']} or done")
        ctx.set(["tasks", args["task"], "owner"], ctx.client)
        return str(task["title"])

    @action("finish")
    def finish(self, ctx: ActionContext, args: Finish) -> None:
        """Mark a task you hold as done, with its result."""
        task = self._task(ctx, _field(args, "task"))
        if task["owner"] != ctx.client:
            raise Rejection("forbidden", f"{args['task']} is not yours: claim it first")
        ctx.set(["tasks", args["task"], "done"], True)
        ctx.set(["tasks", args["task"], "result"], _field(args, "result"))

    def _task(self, ctx: ActionContext, task: str) -> Any:
        found = ctx.state["tasks"].get(task)
        if found is None:
            raise Rejection("invalid", f"no task {task!r}: room_info or get_state lists them")
        return found


def _field(args: Any, name: str) -> str:
    """A handler checks its args itself: the room is the authority, the schema a guide."""
    value = args.get(name) if isinstance(args, dict) else None
    if not isinstance(value, str) or not value:
        raise Rejection("invalid", f"{name} must be a non-empty string")
    return value

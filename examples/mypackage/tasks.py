from typing import Any

from statecast import ActionContext, Rejection, Room, action


class TaskBoard(Room):
    def initial_state(self) -> dict[str, Any]:
        return {"tasks": {"t1": None, "t2": None}}

    @action("claim")
    def claim(self, ctx: ActionContext, args: Any) -> str:
        for task, owner in ctx.state["tasks"].items():
            if owner is None:
                ctx.set(["tasks", task], ctx.client)
                return task  # the answer: call() returns it
        raise Rejection("conflict", "no free task")

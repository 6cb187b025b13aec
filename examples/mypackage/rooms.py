from typing import Any

from statecast import ActionContext, Rejection, Room, action


class Counter(Room):
    def initial_state(self) -> dict[str, Any]:
        return {"n": 0}

    @action("add")
    def add(self, ctx: ActionContext, args: Any) -> None:
        if type(args) is not int or args <= 0:
            raise Rejection("invalid", "add takes a positive int")
        ctx.set(["n"], ctx.state["n"] + args)

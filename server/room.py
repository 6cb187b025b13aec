"""Room types: authoritative state changed only by the room's own action handlers.

A room type subclasses :class:`Room` and marks handlers with :func:`action`::

    class Counter(Room):
        @action("add")
        def add(self, ctx: ActionContext, args: Any) -> None:
            if type(args) is not int:
                raise Rejection("invalid", "add takes an int")
            ctx.set(["n"], ctx.state.get("n", 0) + args)

Handlers read ``ctx.state`` freely but change it only through ``ctx.set``,
``ctx.delete`` and ``ctx.insert``. Each call applies one op at once (so later
reads see it) and records it; the recorded ops *are* the diff, so producing a
diff costs O(size of the change), never a comparison of whole states. A handler
that raises leaves the state exactly as it was: every op keeps an undo entry
and the runner rolls them back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from protocol import codec, ops
from protocol.errors import Rejection

HandlerT = TypeVar("HandlerT", bound=Callable[..., None])


def action(name: str | None = None) -> Callable[[HandlerT], HandlerT]:
    """Mark a method as the handler of the action ``name`` (default: the method's name)."""

    def mark(fn: HandlerT) -> HandlerT:
        fn.__statecast_action__ = name or fn.__name__  # type: ignore[attr-defined]
        return fn

    return mark


class ActionContext:
    """What a handler sees: who acts, the state, and the change-recording API."""

    __slots__ = ("_undo", "client", "encoded_ops", "max_depth", "state")

    def __init__(self, state: dict[str, Any], client: str, max_depth: int) -> None:
        self.state = state
        self.client = client
        self.max_depth = max_depth
        self.encoded_ops: list[bytes] = []
        self._undo: list[ops.Undo] = []

    def set(self, path: list[str | int], value: Any) -> None:
        p = ops.check_path(path, self.max_depth)
        self.record([ops.SET, p, ops.clone_value(value, self.max_depth - len(p))])

    def delete(self, path: list[str | int]) -> None:
        self.record([ops.DEL, ops.check_path(path, self.max_depth)])

    def insert(self, path: list[str | int], value: Any) -> None:
        p = ops.check_path(path, self.max_depth)
        self.record([ops.INS, p, ops.clone_value(value, self.max_depth - len(p))])

    def record(self, op: ops.Op) -> None:
        """Apply and record an op already checked by :func:`protocol.ops.parse_op`."""
        encoded = codec.encode_op(op)  # before a later op can change the value it placed
        ops.apply_op(self.state, op, self._undo)
        self.encoded_ops.append(encoded)

    def rollback(self) -> None:
        ops.rollback(self._undo)
        self.encoded_ops.clear()


class Room:
    """Base of every room type. One instance per live room; it owns the state."""

    #: Levels of nesting allowed in the state and in paths (PROTOCOL.md: default 64).
    max_depth: ClassVar[int] = ops.DEFAULT_MAX_DEPTH
    _handlers: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            for attr, fn in vars(klass).items():
                name = getattr(fn, "__statecast_action__", None)
                if name is not None:
                    handlers[name] = attr
        cls._handlers = handlers

    def __init__(self, name: str, state: dict[str, Any] | None = None) -> None:
        self.name = name
        self.state: dict[str, Any] = state if state is not None else self.initial_state()

    def initial_state(self) -> dict[str, Any]:
        return {}

    @classmethod
    def action_names(cls) -> list[str]:
        return sorted(cls._handlers)

    def run_action(self, client: str, name: str, args: Any) -> list[bytes]:
        """Run one action all or nothing; return its encoded ops or raise Rejection."""
        attr = self._handlers.get(name)
        if attr is None:
            raise Rejection("unknown_action", f"room type {type(self).__name__} has no {name!r}")
        ctx = ActionContext(self.state, client, self.max_depth)
        try:
            getattr(self, attr)(ctx, args)
        except BaseException:
            ctx.rollback()
            raise
        return ctx.encoded_ops

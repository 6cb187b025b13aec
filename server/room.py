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

A ``set`` to the value already there changes nothing, so it records nothing
(:func:`unchanged`): an action whose ops all change nothing yields no diff, no
new seq and no new ETag, and is ACKed with the head. The built-in document room
records its patch ``exact`` instead, because the protocol makes an applied patch
one DIFF with exactly its ops: there a no-op set stays in a patch that changes
something else, and only a patch that changes nothing at all makes no diff
(:attr:`ActionContext.changed`). "The value already there"
means equal as msgpack values: types compare exactly (``1``, ``1.0`` and
``True`` differ, and so do ``0.0`` and ``-0.0``), and maps compare as maps, so
a set that only reorders a map's keys is dropped too and the state keeps the
key order it had. The check costs O(size of the value set), like encoding it.

Size limits are kept in O(change) too. A room knows the encoded size of its
state (measured exactly when it is loaded, and again at every checkpoint, which
encodes the state anyway) and each op moves that figure by what it adds minus
what it removes: the encoded value it places (known from the op's own
encoding) and the key it creates, minus the encoded value it replaces or
deletes. Measuring a removed value costs its size, but every byte is placed by
one op and removed at most once, so the total work stays proportional to the
bytes actions write. A container's header grows or shrinks as its length
crosses 16 or 65536, and that is counted too, so the figure is the exact
encoded size; the checkpoint's re-measurement is a safety net.

Presence: :meth:`Room.on_join` and :meth:`Room.on_leave` run when an agent
comes and goes, in the room's worker in order with actions, through the same
:class:`ActionContext`. Their ops are ordinary diffs (numbered, stored,
replayed on resume); a hook that raises changes nothing. A reconnect within
the server's leave grace, or a newer connection taking over the same client
id, is neither a leave nor a join. Spectators never run hooks.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Final, Literal, NamedTuple, TypeVar

import msgpack

from statecast.protocol import codec, ops
from statecast.protocol.errors import Rejection
from statecast.protocol.messages import MAX_ANSWER_BYTES
from statecast.protocol.views import check_private
from statecast.server.state_view import StateMap, StateMutation

HandlerT = TypeVar("HandlerT", bound=Callable[..., Any])

_MISSING: Final = object()


def action(name: str | None = None) -> Callable[[HandlerT], HandlerT]:
    """Mark a method as the handler of the action ``name`` (default: the method's name)."""

    def mark(fn: HandlerT) -> HandlerT:
        fn.__statecast_action__ = name or fn.__name__  # type: ignore[attr-defined]
        return fn

    return mark


class ActionContext:
    """What a handler sees: who acts, the state, and the change-recording API."""

    __slots__ = (
        "_state",
        "_undo",
        "_view",
        "changed",
        "client",
        "encoded_ops",
        "max_depth",
        "max_key_length",
        "over_budget",
        "size_budget",
        "size_delta",
        "touched",
    )

    def __init__(
        self,
        state: dict[str, Any],
        client: str,
        max_depth: int,
        *,
        max_key_length: int | None = None,
        size_budget: int | None = None,
        over_budget: str | None = None,
    ) -> None:
        self._state = state
        self._view: StateMap | None = None
        self.client = client
        self.max_depth = max_depth
        self.max_key_length = max_key_length
        #: Bytes the state may still grow by (None: not tracked).
        self.size_budget = size_budget
        #: The refusal when an op would go over the budget.
        self.over_budget = over_budget or "the room's state would exceed its size limit"
        #: Estimated change of the state's encoded size so far.
        self.size_delta = 0
        self.encoded_ops: list[bytes] = []
        #: Whether a recorded op changed the state (an exact no-op set does not).
        self.changed = False
        #: (kind, path) of each recorded op, for the net-change index (protocol/netchange.py).
        self.touched: list[tuple[int, ops.Path]] = []
        self._undo: list[ops.Undo] = []

    @property
    def state(self) -> StateMap:
        """The state, read-only (server/state_view.py): change it through the methods below."""
        if self._view is None:
            self._view = StateMap(self._state, None, None)
        return self._view

    def set(self, path: list[str | int], value: Any) -> None:
        p = ops.check_path(path, self.max_depth)
        self.record([ops.SET, p, ops.clone_value(value, self.max_depth - len(p))])

    def delete(self, path: list[str | int]) -> None:
        self.record([ops.DEL, ops.check_path(path, self.max_depth)])

    def insert(self, path: list[str | int], value: Any) -> None:
        p = ops.check_path(path, self.max_depth)
        self.record([ops.INS, p, ops.clone_value(value, self.max_depth - len(p))])

    def record(self, op: ops.Op, *, exact: bool = False) -> None:
        """Apply and record an op already checked by :func:`statecast.protocol.ops.parse_op`.

        A set to the value already there is left out (no diff wakes anyone for it),
        unless ``exact``: then it is recorded all the same, without counting as a change.
        """
        noop = op[0] == ops.SET and unchanged(self._state, op[1], op[2])
        if noop and not exact:
            return
        try:
            encoded = codec.encode_op(op)  # before a later op can change the value it placed
        except UnicodeEncodeError:  # JSON over HTTP can carry "\\ud800"; msgpack cannot
            raise Rejection("invalid", "a string that UTF-8 cannot encode") from None
        limit = self.max_key_length
        if limit is not None and len(encoded) > limit:  # else no key can be that long
            _check_key_lengths(op, limit)
        delta = 0
        if self.size_budget is not None:
            delta = size_change(self._state, op, len(encoded))
            if delta > 0 and self.size_delta + delta > self.size_budget:
                raise Rejection("too_large", self.over_budget)
        mark = len(self._undo)
        try:
            ops.apply_op(self._state, op, self._undo)
        except BaseException:
            # A set can create maps on its path and then fail: undo this op alone, so
            # that a handler which catches the refusal and goes on leaves no trace of it.
            partial = self._undo[mark:]
            del self._undo[mark:]
            ops.rollback(partial)
            raise
        self.size_delta += delta
        self.encoded_ops.append(encoded)
        self.touched.append((op[0], list(op[1])))  # the handler may reuse its path list
        self.changed = self.changed or not noop

    def rollback(self) -> None:
        ops.rollback(self._undo)
        self.encoded_ops.clear()
        self.touched.clear()
        self.size_delta = 0
        self.changed = False


def unchanged(state: dict[str, Any], path: list[Any], value: Any) -> bool:
    """True if ``path`` already holds ``value`` as the same msgpack value (see the module doc)."""
    node: Any = state
    for seg in path:
        if type(node) is dict and type(seg) is str:
            node = node.get(seg, _MISSING)
            if node is _MISSING:
                return False
        elif type(node) is list and type(seg) is int and 0 <= seg < len(node):
            node = node[seg]
        else:
            return False
    # Python's == (in C) settles every real change fast: values that differ under it
    # differ as msgpack values too. Only values it calls equal need the typed check.
    return bool(node == value) and same_value(node, value)


def same_value(a: Any, b: Any) -> bool:
    """Equal as msgpack values: exact types, floats by sign too, maps in any key order.

    Python's ``==`` would call ``1 == 1.0 == True`` and ``0.0 == -0.0``, which
    encode differently. Stops at the first difference, so it costs at most the
    size of the smaller value.
    """
    t = type(a)
    if t is not type(b):
        return False
    if t is dict:
        if len(a) != len(b):
            return False
        for k, v in a.items():
            w = b.get(k, _MISSING)
            if w is _MISSING or not same_value(v, w):
                return False
        return True
    if t is list:
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if t is float:
        return bool(a == b and math.copysign(1.0, a) == math.copysign(1.0, b))
    return bool(a == b)


def _packed_len(value: Any) -> int:
    return len(msgpack.packb(value, use_bin_type=True))


def size_change(state: dict[str, Any], op: ops.Op, op_bytes: int) -> int:
    """Estimated change of the state's encoded size if ``op`` applies (0 if it cannot).

    ``op_bytes`` is the op's encoded length: a set or ins is ``[kind, path,
    value]``, one byte of array header and one of kind ahead of the path, so
    the value's encoded size is what remains after the path.
    """
    kind, path = op[0], op[1]
    value_bytes = op_bytes - 2 - _packed_len(path) if kind != ops.DEL else 0
    node: Any = state
    for i, seg in enumerate(path[:-1]):
        if type(node) is dict and type(seg) is str:
            child = node.get(seg, _MISSING)
            if child is _MISSING:
                if kind != ops.SET:
                    return 0
                # Each missing map costs its key and a one-byte header, then the leaf.
                created = sum(_packed_len(k) + 1 for k in path[i:-1] if type(k) is str)
                return _grow(node, 1) + created + _packed_len(path[-1]) + value_bytes
            node = child
        elif type(node) is list and type(seg) is int and 0 <= seg < len(node):
            node = node[seg]
        else:
            return 0
    last = path[-1]
    if type(node) is dict and type(last) is str:
        old = node.get(last, _MISSING)
        if kind == ops.SET:
            if old is _MISSING:
                return _grow(node, 1) + _packed_len(last) + value_bytes
            return value_bytes - _packed_len(old)
        if kind == ops.DEL and old is not _MISSING:
            return _grow(node, -1) - _packed_len(last) - _packed_len(old)
        return 0
    if type(node) is list and type(last) is int:
        if kind == ops.INS:
            return _grow(node, 1) + value_bytes
        if 0 <= last < len(node):
            old_bytes = _packed_len(node[last])
            if kind == ops.SET:
                return value_bytes - old_bytes
            return _grow(node, -1) - old_bytes
    return 0


def _header_len(n: int) -> int:
    """Bytes of a msgpack map or array header for ``n`` entries."""
    return 1 if n < 16 else 3 if n < 1 << 16 else 5


def _grow(container: dict[str, Any] | list[Any], by: int) -> int:
    n = len(container)
    return _header_len(n + by) - _header_len(n)


def _check_key_lengths(op: ops.Op, limit: int) -> None:
    """Raise too_large if a path segment or a map key in the op's value is over ``limit``."""
    for seg in op[1]:
        if type(seg) is str and len(seg) > limit:
            raise Rejection("too_large", f"a key is longer than {limit} characters")
    if len(op) < 3:
        return
    pending = [op[2]]
    while pending:
        value = pending.pop()
        if type(value) is dict:
            for k, v in value.items():
                if len(k) > limit:
                    raise Rejection("too_large", f"a key is longer than {limit} characters")
                pending.append(v)
        elif type(value) is list:
            pending.extend(value)


class Ran(NamedTuple):
    """What running a handler gave: its ops (encoded), its answer, the entries it changed."""

    parts: list[bytes]
    answer: bytes | None
    touched: list[tuple[int, ops.Path]]


class Room:
    """Base of every room type. One instance per live room; it owns the state."""

    #: Levels of nesting allowed in the state and in paths (docs/protocol.md §3.4: default 64).
    max_depth: int = ops.DEFAULT_MAX_DEPTH
    #: Longest map key or path segment, in characters (None: unlimited).
    max_key_length: int | None = None
    #: Largest encoded size the state may reach (None: unlimited); see :meth:`set_limits`.
    max_state_bytes: int | None = None
    #: The state's encoded size: exact after :meth:`set_limits`, then kept up to date by op.
    state_bytes: int = 0
    #: Why the state may not grow now (the store is full, server/quotas.py), or None.
    growth_refused: str | None = None
    #: How deep net-change catch-up tracks entries (docs/protocol.md §5.11): 0 follows
    #: each op's own path (map keys all the way down); 2 makes ``["tasks", "t1"]`` the
    #: entry for any change inside a task, so a PATCH carries whole tasks (fewer, larger
    #: entries: a smaller index for rooms whose leaves change one by one).
    catchup_depth: ClassVar[int] = 0
    #: Private parts (docs/protocol.md §5.12): path patterns holding one ``"{client}"``
    #: segment, e.g. ``(("hands", "{client}"),)``: each agent sees only its own hand
    #: (and tokens whose ``view`` claim names a path in ``hands`` see what it names);
    #: everyone else sees the room without them. Handlers still read the whole state.
    private: ClassVar[tuple[tuple[str, ...], ...]] = ()
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
        cls.private = tuple(tuple(p) for p in cls.private)
        for pattern in cls.private:
            try:
                check_private(pattern)
            except ValueError as exc:
                raise TypeError(f"{cls.__module__}.{cls.__qualname__}.private: {exc}") from None
        for attr in (*handlers.values(), "on_join", "on_leave"):
            fn = getattr(cls, attr)
            if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
                raise TypeError(
                    f"{cls.__module__}.{cls.__qualname__}.{attr} is async: room handlers "
                    f"and hooks are synchronous. A room runs one action at a time, all or "
                    f"nothing; an await would let other actions see it half done, and it "
                    f"would never be awaited. Do the waiting in the agent and pass what it "
                    f"got in the action's args."
                )

    #: The context of the handler that is running (None between actions).
    _running: ActionContext | None = None

    def __init__(self, name: str, state: dict[str, Any] | None = None) -> None:
        self.name = name
        self.state = state if state is not None else self.initial_state()

    @property
    def state(self) -> dict[str, Any]:
        """The room's state; while a handler or hook runs, a read-only view of it.

        The view (server/state_view.py) is what makes an in-place change impossible:
        a handler that writes ``self.state[...]`` gets :class:`StateMutation` instead
        of a change no DIFF would carry.
        """
        running = self._running
        return self._state if running is None else running.state  # type: ignore[return-value]

    @state.setter
    def state(self, value: dict[str, Any]) -> None:
        if self._running is not None:
            raise StateMutation(
                "assigning self.state in a handler: change the state with ctx.set, "
                "ctx.delete or ctx.insert"
            )
        self._state = value

    def initial_state(self) -> dict[str, Any]:
        return {}

    def set_limits(
        self, *, max_depth: int, max_key_length: int | None, max_state_bytes: int | None
    ) -> None:
        """Apply the server's limits and measure the state once (O(state), at load only)."""
        self.max_depth = max_depth
        self.max_key_length = max_key_length
        self.max_state_bytes = max_state_bytes
        self.state_bytes = _packed_len(self.state)

    @classmethod
    def action_names(cls) -> list[str]:
        return sorted(cls._handlers)

    def on_join(self, ctx: ActionContext) -> None:
        """An agent (``ctx.client``) arrived: record it through ``ctx`` if the room cares."""

    def on_leave(self, ctx: ActionContext) -> None:
        """An agent (``ctx.client``) left and did not come back within the leave grace."""

    @classmethod
    def has_presence_hooks(cls) -> bool:
        """Whether this type overrides a hook (if not, the server tracks no joins or leaves)."""
        return cls.on_join is not Room.on_join or cls.on_leave is not Room.on_leave

    def present_agents(self) -> Iterable[str]:
        """The agents this room's state records as present.

        Read when the room is loaded: each of them gets the leave grace to
        reconnect before :meth:`on_leave` runs for it, so that presence kept in
        the state survives a restart without leaving ghosts behind.
        """
        return ()

    def run_action(
        self, client: str, name: str, args: Any, undo: list[ops.Undo] | None = None
    ) -> Ran:
        """Run one action all or nothing; return its encoded ops and answer, or raise Rejection.

        The answer is what the handler returned, encoded (None when it returned None):
        it must be a state value of at most ``MAX_ANSWER_BYTES`` encoded, else the action
        is refused (``invalid`` / ``too_large``) and changes nothing.

        ``undo``, if given, receives the applied action's undo entries, so a whole
        batch can be rolled back when its write to the store does not happen.
        """
        attr = self._handlers.get(name)
        if attr is None:
            raise Rejection("unknown_action", f"room type {type(self).__name__} has no {name!r}")
        return self._run(undo, client, getattr(self, attr), args)

    def run_hook(
        self, client: str, hook: Literal["join", "leave"], undo: list[ops.Undo] | None = None
    ) -> Ran:
        """Run :meth:`on_join` or :meth:`on_leave` all or nothing (its answer is ignored)."""
        hook_fn = self.on_join if hook == "join" else self.on_leave
        return self._run(undo, client, hook_fn)

    def _run(
        self,
        undo: list[ops.Undo] | None,
        client: str,
        handler: Callable[..., Any],
        *args: Any,
    ) -> Ran:
        budget = None
        if self.max_state_bytes is not None:
            budget = self.max_state_bytes - self.state_bytes
        refused = self.growth_refused
        if refused is not None:
            budget = 0  # shrinking and same-size changes still go through
        ctx = ActionContext(
            self._state,
            client,
            self.max_depth,
            max_key_length=self.max_key_length,
            size_budget=budget,
            over_budget=refused,
        )
        self._running = ctx
        answer: bytes | None = None
        try:
            returned = handler(ctx, *args)
            if returned is not None:
                answer = _encode_answer(returned, self.max_depth)
            if budget is not None and ctx.size_delta > max(budget, 0):
                raise Rejection("too_large", ctx.over_budget)
        except BaseException:
            ctx.rollback()
            raise
        finally:
            self._running = None
        self.state_bytes += ctx.size_delta
        if undo is not None:
            undo.extend(ctx._undo)
        return Ran(ctx.encoded_ops, answer, ctx.touched)


def _encode_answer(value: Any, max_depth: int) -> bytes:
    """A handler's answer, checked and encoded once (docs/protocol.md §5.8)."""
    try:
        checked = ops.clone_value(value, max_depth)  # views unwrapped; a non-state value refused
        encoded: bytes = msgpack.packb(checked, use_bin_type=True)
    except Rejection as exc:
        if exc.code == "too_large":  # nested deeper than the room allows
            raise Rejection("too_large", f"the handler's answer: {exc.message}") from None
        message = f"the handler's answer is not a state value: {exc.message}"
        raise Rejection("invalid", message) from None
    except UnicodeEncodeError:
        message = "the handler's answer holds a string UTF-8 cannot encode"
        raise Rejection("invalid", message) from None
    if len(encoded) > MAX_ANSWER_BYTES:
        raise Rejection(
            "too_large",
            f"the handler's answer is {len(encoded)} bytes encoded; "
            f"answers are at most {MAX_ANSWER_BYTES}",
        )
    return encoded

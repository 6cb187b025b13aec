"""Read-only views of a room's state, which is all a handler sees of it.

A handler reads the state as it likes but changes it only through ``ctx.set``,
``ctx.delete`` and ``ctx.insert``: those record the ops that become the DIFF.
A change made in place (``ctx.state["tasks"][t]["owner"] = me``) would record
nothing, so no DIFF would go out while later joiners and ``GET /state`` saw the
change: two clients at one seq would disagree. So while a handler runs,
``ctx.state`` and ``self.state`` are views: maps and lists that read through to
the state and refuse every in-place change with :class:`StateMutation`, which
the room's writer turns into an ``invalid`` refusal (the state is untouched:
nothing was changed).

A view costs one small object per container read (maps and lists are wrapped
as they are reached; strings and numbers are returned as they are), never a
copy: reading ``ctx.state["a"]["b"]`` wraps two maps whatever the state's size.
``copy.deepcopy`` of a view gives plain dicts and lists the handler may change
freely (they are its own), and a view passed to ``ctx.set`` is copied like any
value.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, KeysView, Mapping, Sequence
from typing import Any, NoReturn, overload

_ABSENT: Any = object()


class StateMutation(TypeError):
    """A handler tried to change the state in place instead of through ``ctx``."""


def view(value: Any) -> Any:
    """``value`` as a handler may see it: containers wrapped, scalars as they are."""
    t = type(value)
    if t is dict:
        return StateMap(value, None, None)
    if t is list:
        return StateList(value, None, None)
    return value


def raw(value: Any) -> Any:
    """The state value a view reads (the value itself if it is not a view)."""
    return value._raw if isinstance(value, (StateMap, StateList)) else value


class _View:
    __slots__ = ("_key", "_parent", "_raw")

    _raw: Any

    def __init__(self, raw_value: Any, parent: _View | None, key: str | int | None) -> None:
        self._raw = raw_value
        self._parent = parent
        self._key = key

    def _child(self, key: str | int, value: Any) -> Any:
        t = type(value)
        if t is dict:
            return StateMap(value, self, key)
        if t is list:
            return StateList(value, self, key)
        return value

    def _path(self) -> str:
        keys: list[str | int | None] = []
        node: _View | None = self
        while node is not None and node._key is not None:
            keys.append(node._key)
            node = node._parent
        return "state" + "".join(f"[{k!r}]" for k in reversed(keys))

    def _refuse(self, what: str, *_: Any, **__: Any) -> NoReturn:
        raise StateMutation(
            f"{what} on {self._path()}: the state is read-only in a handler; change it "
            f"with ctx.set(path, value), ctx.delete(path) or ctx.insert(path, value), "
            f"which record the change that goes out to every subscriber"
        )

    @property
    def __statecast_value__(self) -> Any:
        """What :func:`statecast.protocol.ops.clone_value` copies when a view is set."""
        return self._raw

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return copy.deepcopy(self._raw, memo)

    def __copy__(self) -> Any:
        self._refuse("a shallow copy (its maps and lists would be the state's own)")

    def __eq__(self, other: object) -> bool:
        return bool(self._raw == raw(other))

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]

    def __len__(self) -> int:
        return len(self._raw)

    def __repr__(self) -> str:
        return repr(self._raw)


class StateMap(_View, Mapping[str, Any]):
    """A read-only map of the state (a :class:`collections.abc.Mapping`)."""

    __slots__ = ()

    _raw: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        value = self._raw[key]
        t = type(value)  # inlined _child: this is the hot path of every read
        if t is dict:
            return StateMap(value, self, key)
        if t is list:
            return StateList(value, self, key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        value = self._raw.get(key, _ABSENT)
        t = type(value)
        if t is dict:
            return StateMap(value, self, key)
        if t is list:
            return StateList(value, self, key)
        return default if value is _ABSENT else value

    def __contains__(self, key: object) -> bool:
        return key in self._raw

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def keys(self) -> KeysView[str]:
        # Not the dict's own keys(): its .mapping would hand out the raw dict.
        return KeysView(self)

    def values(self) -> Iterator[Any]:  # type: ignore[override]
        """The values, wrapped as they are reached (a loop that stops early wraps no more)."""
        child = self._child
        return (child(k, v) for k, v in self._raw.items())

    def items(self) -> Iterator[tuple[str, Any]]:  # type: ignore[override]
        child = self._child
        return ((k, child(k, v)) for k, v in self._raw.items())

    def __setitem__(self, key: str, value: Any) -> NoReturn:
        self._refuse(f"setting {key!r}")

    def __delitem__(self, key: str) -> NoReturn:
        self._refuse(f"deleting {key!r}")

    def setdefault(self, key: str, default: Any = None) -> NoReturn:
        self._refuse(f"setdefault({key!r})")

    def pop(self, key: str, *default: Any) -> NoReturn:
        self._refuse(f"pop({key!r})")

    def popitem(self) -> NoReturn:
        self._refuse("popitem()")

    def update(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse("update()")

    def clear(self) -> NoReturn:
        self._refuse("clear()")

    def __ior__(self, other: Any) -> NoReturn:
        self._refuse("|=")


class StateList(_View, Sequence[Any]):
    """A read-only list of the state (a :class:`collections.abc.Sequence`)."""

    __slots__ = ()

    _raw: list[Any]

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):  # a new list, but its maps and lists are the state's
            return [view(v) for v in self._raw[index]]
        value = self._raw[index]  # IndexError as a list would
        return self._child(index % len(self._raw), value)

    def __iter__(self) -> Iterator[Any]:
        child = self._child
        return (child(i, v) for i, v in enumerate(self._raw))

    def __contains__(self, value: object) -> bool:
        return raw(value) in self._raw

    def __setitem__(self, index: Any, value: Any) -> NoReturn:
        self._refuse(f"setting [{index!r}]")

    def __delitem__(self, index: Any) -> NoReturn:
        self._refuse(f"deleting [{index!r}]")

    def append(self, value: Any) -> NoReturn:
        self._refuse("append()")

    def extend(self, values: Any) -> NoReturn:
        self._refuse("extend()")

    def insert(self, index: int, value: Any) -> NoReturn:
        self._refuse("insert()")

    def pop(self, index: int = -1) -> NoReturn:
        self._refuse("pop()")

    def remove(self, value: Any) -> NoReturn:
        self._refuse("remove()")

    def clear(self) -> NoReturn:
        self._refuse("clear()")

    def sort(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse("sort() (sorted(...) gives a new list)")

    def reverse(self) -> NoReturn:
        self._refuse("reverse()")

    def __iadd__(self, other: Any) -> NoReturn:
        self._refuse("+=")

    def __imul__(self, other: Any) -> NoReturn:
        self._refuse("*=")

    def __add__(self, other: Any) -> list[Any]:
        return [view(v) for v in self._raw] + list(other)

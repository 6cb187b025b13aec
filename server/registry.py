"""Which room type serves which room name.

Patterns are shell globs (``fnmatch``) tried in the order given; a room no
pattern claims is a :class:`~statecast.server.rooms.document.DocumentRoom`. On the command
line: ``--room-type 'grid-*=statecast.server.rooms.grid:GridRoom'`` (repeatable), or
``STATECAST_ROOM_TYPES='grid-*=statecast.server.rooms.grid:GridRoom,...'``.

Room type modules are imported as ``python -m`` would import them: the
current directory comes first on ``sys.path``, so ``statecast serve
--room-type 'counter-*=mypackage.rooms:Counter'`` run from the folder that
holds ``mypackage/`` finds it, whether statecast was started as ``statecast``
(whose script directory, not the current one, is what Python puts first) or
as ``python -m statecast``.
"""

from __future__ import annotations

import fnmatch
import importlib
import os
import sys
from collections.abc import Iterable

from statecast.server.room import Room
from statecast.server.rooms.document import DocumentRoom


def type_name(cls: type) -> str:
    """How a room type is named in the store and the listing: ``module:Qualname``."""
    return f"{cls.__module__}:{cls.__qualname__}"


def load_room_class(spec: str) -> type[Room]:
    """Import ``module:Class`` and check that it is a Room type."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"room type {spec!r} is not of the form module:Class")
    _current_directory_first()
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        searched = ", ".join(p or "''" for p in sys.path)
        raise ValueError(
            f"room type {spec!r} cannot be loaded: {exc} (searched sys.path: {searched})"
        ) from None
    except Exception as exc:  # the module itself failed: a SyntaxError, a raise at import
        raise ValueError(f"room type {spec!r} cannot be loaded: {exc!r}") from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise ValueError(
            f"room type {spec!r} cannot be loaded: {module_name} ({module.__file__}) "
            f"has no {attr!r}"
        ) from None
    if not (isinstance(obj, type) and issubclass(obj, Room)):
        raise ValueError(f"{spec} is not a subclass of statecast.Room")
    return obj


def _built_in() -> tuple[type[Room], ...]:
    """The room types statecast ships: a room created as one is always served as it."""
    from statecast.server.rooms.document import PresenceDocumentRoom
    from statecast.server.rooms.grid import GridRoom

    return (DocumentRoom, PresenceDocumentRoom, GridRoom)


def _current_directory_first() -> None:
    """Put the current directory first on ``sys.path``, as ``python -m`` does, once."""
    cwd = os.getcwd()
    if not any(os.path.abspath(p or os.curdir) == cwd for p in sys.path):
        sys.path.insert(0, cwd)


class RoomTypeMissing(Exception):
    """A stored room's type is not registered here: the room is not served as another type
    (its rules are its security), and the message says how to register it."""

    def __init__(self, room: str, stored: str) -> None:
        super().__init__(
            f"room {room!r} was created as type {stored!r}, which this server does not "
            f"register: start it with --room-type '{room}={stored}' (or a pattern that "
            f"matches the room)"
        )
        self.room = room
        self.stored = stored


class RoomTypes:
    def __init__(
        self, entries: Iterable[tuple[str, type[Room]]] = (), default: type[Room] = DocumentRoom
    ) -> None:
        self.entries = list(entries)
        #: The type of rooms no pattern claims.
        self.default = default

    @classmethod
    def parse(cls, specs: Iterable[str], default: type[Room] = DocumentRoom) -> RoomTypes:
        entries = []
        for spec in specs:
            pattern, sep, target = spec.partition("=")
            if not sep or not pattern:
                raise ValueError(f"room type {spec!r} is not of the form PATTERN=module:Class")
            entries.append((pattern, load_room_class(target)))
        return cls(entries, default)

    def register(self, pattern: str, room_class: type[Room]) -> None:
        self.entries.append((pattern, room_class))

    def for_room(self, name: str) -> type[Room]:
        """The type a new room of this name is created as."""
        for pattern, room_class in self.entries:
            if fnmatch.fnmatchcase(name, pattern):
                return room_class
        return self.default

    def for_stored(self, name: str, stored: str) -> type[Room]:
        """The type of an existing room, created as ``stored``: the one its name maps to if
        that is it, else any registered type of that name; never another type."""
        room_class = self.for_room(name)
        if type_name(room_class) == stored:
            return room_class
        for candidate in (*(c for _, c in self.entries), self.default, *_built_in()):
            if type_name(candidate) == stored:
                return candidate
        raise RoomTypeMissing(name, stored)

    def overlaps(self) -> list[str]:
        """A line for each registered pattern that a pattern before it can shadow: the
        first that matches a name wins."""
        lines = []
        for i, (pattern, room_class) in enumerate(self.entries):
            for earlier, earlier_class in self.entries[:i]:
                if earlier_class is room_class:
                    continue
                if fnmatch.fnmatchcase(pattern, earlier) or fnmatch.fnmatchcase(earlier, pattern):
                    lines.append(
                        f"--room-type patterns {earlier!r} and {pattern!r} overlap: a room "
                        f"both match is a {type_name(earlier_class)} (the first given wins)"
                    )
        return lines

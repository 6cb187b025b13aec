"""Which room type serves which room name.

Patterns are shell globs (``fnmatch``) tried in the order given; a room no
pattern claims is a :class:`~statecast.server.rooms.document.DocumentRoom`. On the command
line: ``--room-type 'grid-*=statecast.server.rooms.grid:GridRoom'`` (repeatable), or
``STATECAST_ROOM_TYPES='grid-*=statecast.server.rooms.grid:GridRoom,...'``.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Iterable

from statecast.server.room import Room
from statecast.server.rooms.document import DocumentRoom


def load_room_class(spec: str) -> type[Room]:
    """Import ``module:Class`` and check that it is a Room type."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"room type {spec!r} is not of the form module:Class")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"room type {spec!r} cannot be loaded: {exc}") from None
    if not (isinstance(obj, type) and issubclass(obj, Room)):
        raise ValueError(f"{spec} is not a subclass of statecast.server.room.Room")
    return obj


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
        for pattern, room_class in self.entries:
            if fnmatch.fnmatchcase(name, pattern):
                return room_class
        return self.default

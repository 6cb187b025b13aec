"""Room names: the one rule the server, the clients and the pages check alike.

A room name is 1 to 128 characters of ``A-Z a-z 0-9 _ . -``, other than ``.`` and ``..``
(which browsers and proxies rewrite as path segments). docs/protocol.md §4.1.
"""

from __future__ import annotations

import re
from typing import Final

#: The rule as a regular expression (what follows ``/rooms/`` in every URL).
ROOM_NAME_PATTERN: Final = r"(?!\.\.?(?:/|$))[A-Za-z0-9_.-]{1,128}"
ROOM_NAME: Final = re.compile(ROOM_NAME_PATTERN)
#: The rule in words, for every refusal.
ROOM_NAME_RULE: Final = (
    "a room name is 1 to 128 characters of letters, digits, '_', '.' and '-', and not '.' or '..'"
)


def room_name_problem(name: str) -> str | None:
    """None for a good room name; else a line that names it and the rule."""
    if ROOM_NAME.fullmatch(name):
        return None
    return f"bad room name {name[:140]!r}: {ROOM_NAME_RULE}"

"""Who may join which room in which role.

``--auth none`` trusts the HELLO's claims (local development; the server warns
at start). ``--auth jwt`` is implemented in :mod:`statecast.server.jwt_auth`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from statecast.protocol.errors import NotPermitted
from statecast.protocol.messages import Role

#: Longest client id accepted (a HELLO's ``client``, a token's ``sub``, an HTTP
#: action's ``client``): each one is stored per room with its last aid.
MAX_CLIENT_ID_LENGTH: Final = 256


@dataclass(frozen=True, slots=True)
class Identity:
    role: Role
    client: str | None
    #: When the connection's credentials stop being valid (seconds since the
    #: epoch); an open connection is closed with 4001 then. None: never.
    expires: float | None = None
    #: The path prefixes its token lets it read (the ``view`` claim, docs/protocol.md
    #: §5.12); None: the whole room (but other agents' private parts).
    view: tuple[tuple[str, ...], ...] | None = None


class Authenticator(Protocol):
    def authorize(self, token: str | None, room: str, role: Role, client: str | None) -> Identity:
        """The identity to act as, or raise Unauthenticated (4001) / NotPermitted (4003)."""
        ...

    def visible_rooms(self, token: str | None) -> Callable[[str], bool]:
        """Which room names a listing shows this token; raise Unauthenticated (4001)."""
        ...

    def view_claim(self, token: str | None) -> tuple[tuple[str, ...], ...] | None:
        """The token's ``view`` claim (docs/protocol.md §5.12), None if it has none."""
        ...


def assign_client_id() -> str:
    return uuid.uuid4().hex


class NoAuth:
    def authorize(self, token: str | None, room: str, role: Role, client: str | None) -> Identity:
        if client is not None and len(client) > MAX_CLIENT_ID_LENGTH:
            raise NotPermitted(f"client ids are at most {MAX_CLIENT_ID_LENGTH} characters")
        if role == "agent" and client is None:
            client = assign_client_id()
        return Identity(role, client)

    def visible_rooms(self, token: str | None) -> Callable[[str], bool]:
        return _every_room

    def view_claim(self, token: str | None) -> tuple[tuple[str, ...], ...] | None:
        return None


def _every_room(room: str) -> bool:
    return True

"""``--auth jwt``: bearer tokens signed with a shared secret (HS256) or a key pair (RS256).

A token's claims::

    sub    the client id (an agent acts as this id, whatever its HELLO says)
    role   "agent" (read and act) or "spectator" (read only)
    rooms  a list of room names or shell globs (fnmatch, case-sensitive)
    exp    expiry, seconds since the epoch (required)
    view   optional: the path prefixes its holder may read, e.g. [["board"], ["players",
           "p7"]] (docs/protocol.md §5.12); without it, the whole room but other agents'
           private parts

Every HELLO (a resume included) and every HTTP request is checked. A connection
remembers only its token's ``exp``: it is closed with 4001 once that passes
(with the same leeway as at HELLO). An agent token also grants
the spectator role in its rooms; a spectator token never grants acting.

Only the configured algorithm is accepted, so a token cannot pick a weaker one
(``none``, or HS256 signed with the RS256 public key as its secret).
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jwt

from statecast.protocol.errors import NotPermitted, Unauthenticated
from statecast.protocol.messages import ROLES, Role
from statecast.protocol.views import check_prefixes
from statecast.server.auth import MAX_CLIENT_ID_LENGTH, Identity
from statecast.server.config import Config

#: Seconds of clock difference tolerated on ``exp`` (and ``nbf``/``iat`` when present).
LEEWAY: Final = 10.0
#: HMAC secrets shorter than this are refused (RFC 7518 §3.2: at least the hash size).
MIN_SECRET_BYTES: Final = 32
#: Longest ``sub`` accepted: it becomes a client id, stored per room.
#: Verified tokens remembered (by their exact text) so polling clients do not
#: pay a signature check per request. ``exp`` is still checked on every use.
CACHE_SIZE: Final = 4096

HMAC_ALGORITHMS: Final = frozenset({"HS256", "HS384", "HS512"})
KEY_ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows."""

    sub: str
    role: Role
    rooms: tuple[str, ...]
    exp: float
    view: tuple[tuple[str, ...], ...] | None = None

    def allows_room(self, room: str) -> bool:
        return any(fnmatch.fnmatchcase(room, pattern) for pattern in self.rooms)

    def allows_role(self, role: Role) -> bool:
        return role == "spectator" or self.role == "agent"


def load_key(config: Config, environ: dict[str, str] | None = None) -> str:
    """The verification key for ``config.jwt_algorithm``, or raise ValueError."""
    env = os.environ if environ is None else environ
    algorithm = config.jwt_algorithm
    if algorithm in HMAC_ALGORITHMS:
        secret = config.jwt_secret or env.get("STATECAST_JWT_SECRET")
        if not secret:
            raise ValueError("--auth jwt needs --jwt-secret or STATECAST_JWT_SECRET")
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"the JWT secret must be at least {MIN_SECRET_BYTES} bytes")
        return secret
    if algorithm in KEY_ALGORITHMS:
        source = config.jwt_public_key or env.get("STATECAST_JWT_PUBLIC_KEY")
        if not source:
            raise ValueError(f"--jwt-algorithm {algorithm} needs --jwt-public-key (a PEM file)")
        if source.lstrip().startswith("-----BEGIN"):
            return source
        try:
            return Path(source).read_text()
        except OSError as exc:
            raise ValueError(f"cannot read the JWT public key: {exc}") from None
    raise ValueError(f"unsupported JWT algorithm {algorithm!r}")


class JwtAuth:
    def __init__(
        self,
        key: str,
        algorithm: str,
        *,
        public_spectators: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = key
        self.algorithm = algorithm
        self.public_spectators = public_spectators
        self.clock = clock
        self._cache: dict[str, Grant] = {}

    @classmethod
    def from_config(cls, config: Config) -> JwtAuth:
        return cls(
            load_key(config), config.jwt_algorithm, public_spectators=config.public_spectators
        )

    def authorize(self, token: str | None, room: str, role: Role, client: str | None) -> Identity:
        """Identity for a HELLO or an HTTP request; raise Unauthenticated or NotPermitted.

        ``client`` (the HELLO's claim) is ignored: the token's subject is the
        client id. A token that is presented is always checked, even by a
        spectator where tokenless spectators are allowed.
        """
        if token is None:
            if role == "spectator" and self.public_spectators:
                return Identity("spectator", None)
            raise Unauthenticated("token missing")
        grant = self.verify(token)
        if not grant.allows_room(room):
            raise NotPermitted(f"the token does not grant room {room!r}")
        if not grant.allows_role(role):
            raise NotPermitted(f"the token grants {grant.role}, not {role}")
        return Identity(role, grant.sub, grant.exp + LEEWAY, grant.view)

    def visible_rooms(self, token: str | None) -> Callable[[str], bool]:
        """The rooms a listing shows: those the token grants (any role may read), or every
        room to a tokenless reader when spectators are public."""
        if token is None:
            if self.public_spectators:
                return lambda room: True
            raise Unauthenticated("token missing")
        return self.verify(token).allows_room

    def view_claim(self, token: str | None) -> tuple[tuple[str, ...], ...] | None:
        return self.verify(token).view if token is not None else None

    def verify(self, token: str) -> Grant:
        """The token's grant, or raise Unauthenticated (missing claims count as malformed)."""
        grant = self._cache.get(token)
        if grant is not None:
            if self.clock() > grant.exp + LEEWAY:
                del self._cache[token]
                raise Unauthenticated("token expired")
            return grant
        grant = self._decode(token)
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[token] = grant
        return grant

    def _decode(self, token: str) -> Grant:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.key,
                algorithms=[self.algorithm],
                options={"require": ["exp", "sub"]},
                leeway=LEEWAY,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("token signature does not verify") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("token not valid yet") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"token malformed: {exc}") from None
        sub, role, rooms, exp = (claims.get(k) for k in ("sub", "role", "rooms", "exp"))
        if type(sub) is not str or not 0 < len(sub) <= MAX_CLIENT_ID_LENGTH:
            raise Unauthenticated(
                f"token malformed: sub must be 1 to {MAX_CLIENT_ID_LENGTH} characters"
            )
        if role not in ROLES:
            raise Unauthenticated("token malformed: role must be 'agent' or 'spectator'")
        if type(rooms) is not list or not all(type(p) is str for p in rooms):
            raise Unauthenticated("token malformed: rooms must be a list of names or patterns")
        if type(exp) is not int and type(exp) is not float:
            raise Unauthenticated("token malformed: exp must be a number")
        view = None
        if claims.get("view") is not None:
            try:
                view = tuple(tuple(p) for p in check_prefixes(claims["view"], "the view claim"))
            except ValueError as exc:
                raise Unauthenticated(f"token malformed: {exc}") from None
        return Grant(sub, role, tuple(rooms), float(exp), view)


def mint(
    key: str,
    *,
    sub: str,
    role: Role,
    rooms: list[str],
    ttl: float,
    algorithm: str = "HS256",
    now: float | None = None,
    view: list[list[str]] | None = None,
) -> str:
    """A signed token (``key`` is the HMAC secret, or a PEM private key for RS256 and the like)."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": sub,
        "role": role,
        "rooms": rooms,
        "iat": issued,
        "exp": issued + int(ttl),
    }
    if view is not None:
        claims["view"] = view
    return jwt.encode(claims, key, algorithm=algorithm)

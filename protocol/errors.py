"""The statecast error tree.

Every error says which side is at fault and what to do about it, so the code
that closes a socket or answers an HTTP request only reads a hint::

    StatecastError
    ├── ProtocolViolation        the peer broke the wire contract: close the socket
    │   ├── MalformedMessage     1007: not msgpack, or not one of the message forms
    │   ├── MessageTooLarge      1009: over the negotiated size limit
    │   ├── OutOfOrder           4000: well-formed, but not allowed now
    │   ├── Unauthenticated      4001: token missing, malformed, badly signed, expired
    │   ├── NotPermitted         4003: the token does not grant this room or role
    │   ├── NoSuchRoom           4004: the room does not exist and is not created on join
    │   ├── SlowConsumer         4008: the subscriber fell too far behind
    │   └── RateLimitExceeded    4029: the rate limit was exceeded repeatedly
    ├── Rejection                the room refused an action: ERROR, the socket stays open
    └── ServerClosed             the server ended the connection (seen by clients)
        └── ClientIdTakenOver    4009: another connection uses this agent's client id

A :class:`ProtocolViolation` carries the close code that docs/protocol.md §8.1 names; a
:class:`Rejection` carries its ERROR code and the HTTP status that the HTTP side
answers with.
"""

from __future__ import annotations

from typing import ClassVar, Final

#: ERROR codes (docs/protocol.md §5.9) and the HTTP status each maps to.
ERROR_HTTP_STATUS: Final[dict[str, int]] = {
    "invalid": 400,
    "unknown_action": 400,
    "forbidden": 403,
    "conflict": 409,
    "too_large": 413,
    "rate_limited": 429,
    "unavailable": 503,
}

ERROR_CODES: Final[frozenset[str]] = frozenset(ERROR_HTTP_STATUS)


class StatecastError(Exception):
    """Base of every error statecast raises on purpose."""


class ProtocolViolation(StatecastError):
    """The peer broke the wire contract; the connection must close with ``close_code``."""

    close_code: ClassVar[int] = 1002

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MalformedMessage(ProtocolViolation):
    close_code = 1007


class MessageTooLarge(ProtocolViolation):
    close_code = 1009


class OutOfOrder(ProtocolViolation):
    close_code = 4000


class Unauthenticated(ProtocolViolation):
    close_code = 4001


class NotPermitted(ProtocolViolation):
    close_code = 4003


class NoSuchRoom(ProtocolViolation):
    close_code = 4004


class SlowConsumer(ProtocolViolation):
    close_code = 4008


class RateLimitExceeded(ProtocolViolation):
    close_code = 4029


class Rejection(StatecastError):
    """A room refused an action (or an HTTP request); nothing changed.

    ``code`` is one of :data:`ERROR_CODES`; ``http_status`` is the status the
    HTTP side answers with.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return ERROR_HTTP_STATUS.get(self.code, 400)


class AnswerLost(StatecastError):
    """The action took effect (exactly once) while the client was away, but its answer is
    no longer known: a room keeps only each client's last answer (docs/protocol.md §5.8),
    and a later action of this client was processed after it. Read the outcome from the
    room's state, or make the call idempotent and call again."""

    def __init__(self, aid: int) -> None:
        super().__init__(
            f"action {aid} took effect while the client was away; its answer is gone, since "
            "a room keeps only a client's last answer: read the outcome from the state"
        )
        self.aid = aid


class ServerClosed(StatecastError):
    """The server closed the connection with a code that says not to retry."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed by server: {code} {reason}".strip())
        self.code = code
        self.reason = reason


class ClientIdTakenOver(ServerClosed):
    """Close 4009: a newer connection with the same agent client id joined the room.

    Two running agents share one client id; their aids collide, so the room
    would drop one's actions as already processed. Give each agent its own id.
    The client does not reconnect on its own after this.
    """

    def __init__(self, client: str | None, reason: str) -> None:
        super().__init__(4009, reason)
        self.client = client

    def __str__(self) -> str:
        return (
            f"closed by server: 4009: another connection took over client id {self.client!r} "
            "in this room; each running agent needs a client id of its own"
        )


class ConnectFailed(StatecastError):
    """connect() could not make its first connection: ``reason`` says why (refused,
    the HTTP status and the server's answer, a timeout). After a first WELCOME the
    client reconnects by itself instead."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot connect to {url}: {reason}")
        self.url = url
        self.reason = reason


#: Close codes after which a client should reconnect and resume (docs/protocol.md §8).
RETRYABLE_CLOSE_CODES: Final[frozenset[int]] = frozenset({1001, 1006, 1011, 1012, 1013, 4008, 4029})

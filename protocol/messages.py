"""The messages of the statecast wire protocol, version 1 (docs/protocol.md §5).

Each message is a msgpack array whose first element is its int type. The
classes here are plain values; :mod:`statecast.protocol.codec` turns bytes into them
(checking every shape) and them into bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

PROTOCOL_VERSION: Final = 1

HELLO: Final = 1
WELCOME: Final = 2
SNAPSHOT: Final = 3
ACTION: Final = 4
DIFF: Final = 5
RESYNC: Final = 6
ACK: Final = 7
#: The largest answer a handler may give, encoded (docs/protocol.md §5.8).
MAX_ANSWER_BYTES: Final = 8192
ERROR: Final = 8
#: statecast extension (docs/protocol.md §5.11): the net change from a client's seq.
PATCH: Final = 9
#: statecast extension (docs/protocol.md §5.12): a view's change, numbered from the last.
VIEW_DIFF: Final = 10
#: statecast extension (§5.12): a client asks for another view on a live connection.
VIEW: Final = 11
#: statecast extension (§5.12): the server's answer: the view now, at a seq.
VIEW_SET: Final = 12

Role: TypeAlias = Literal["agent", "spectator"]
SyncKind: TypeAlias = Literal["snapshot", "replay", "current", "patch"]
ROLES: Final[frozenset[str]] = frozenset({"agent", "spectator"})
SYNC_KINDS: Final[frozenset[str]] = frozenset({"snapshot", "replay", "current", "patch"})


@dataclass(frozen=True, slots=True)
class Hello:
    v: int
    role: Role
    token: str | None = None
    client: str | None = None
    resume: tuple[str, int] | None = None
    #: statecast extension (docs/protocol.md §5.8): ACKs may carry a handler's answer.
    answers: bool = False
    #: statecast extension (docs/protocol.md §5.11): a resume may be answered by PATCH.
    patch: bool = False
    #: statecast extension (docs/protocol.md §5.12): the path prefixes the client wants
    #: to see, or True for all it may see; None: the key is left out (a base client).
    view: list[list[str]] | Literal[True] | None = None
    #: statecast extension (§5.12): the ``view_tag`` of the view the state held is a copy of.
    view_tag: str | None = None

    def to_wire(self) -> list[Any]:
        body: dict[str, Any] = {"v": self.v, "role": self.role}
        if self.answers:
            body["answers"] = True
        if self.patch:
            body["patch"] = True
        if self.view is not None:
            body["view"] = self.view
        if self.view_tag is not None:
            body["view_tag"] = self.view_tag
        if self.token is not None:
            body["token"] = self.token
        if self.client is not None:
            body["client"] = self.client
        if self.resume is not None:
            body["resume"] = list(self.resume)
        return [HELLO, body]


@dataclass(frozen=True, slots=True)
class Welcome:
    epoch: str
    seq: int
    role: Role
    client: str | None
    acked: int
    sync: SyncKind
    #: statecast extension: the largest message the server accepts, in bytes (None: not
    #: said), so a client can refuse a larger action itself instead of being closed 1009.
    max_message: int | None = None
    #: statecast extension (§5.12): the view the connection has (prefixes, or True: all
    #: it may see), for a HELLO that carried one; None otherwise.
    view: list[list[str]] | Literal[True] | None = None
    #: statecast extension (§5.12): names what the connection sees (the view within the
    #: token and the private parts); a later HELLO gives it back with its resume.
    view_tag: str | None = None

    def to_wire(self) -> list[Any]:
        body: dict[str, Any] = {
            "epoch": self.epoch,
            "seq": self.seq,
            "role": self.role,
            "client": self.client,
            "acked": self.acked,
            "sync": self.sync,
        }
        if self.max_message is not None:
            body["max_message"] = self.max_message
        if self.view is not None:
            body["view"] = self.view
        if self.view_tag is not None:
            body["view_tag"] = self.view_tag
        return [WELCOME, body]


@dataclass(frozen=True, slots=True)
class Snapshot:
    epoch: str
    seq: int
    state: dict[str, Any]

    def to_wire(self) -> list[Any]:
        return [SNAPSHOT, self.epoch, self.seq, self.state]


@dataclass(frozen=True, slots=True)
class Action:
    aid: int
    name: str
    args: Any

    def to_wire(self) -> list[Any]:
        return [ACTION, self.aid, self.name, self.args]


@dataclass(frozen=True, slots=True)
class Diff:
    seq: int
    ops: list[Any]

    def to_wire(self) -> list[Any]:
        return [DIFF, self.seq, self.ops]


@dataclass(frozen=True, slots=True)
class Resync:
    epoch: str
    seq: int

    def to_wire(self) -> list[Any]:
        return [RESYNC, self.epoch, self.seq]


@dataclass(frozen=True, slots=True)
class Ack:
    aid: int
    seq: int | None
    #: The handler's answer (statecast extension, §5.8); None: it gave none.
    answer: Any = None

    def to_wire(self) -> list[Any]:
        if self.answer is None:
            return [ACK, self.aid, self.seq]
        return [ACK, self.aid, self.seq, self.answer]


@dataclass(frozen=True, slots=True)
class Patch:
    """The net change taking the state at ``since`` to the state at ``seq`` (§5.11)."""

    epoch: str
    since: int
    seq: int
    ops: list[Any]

    def to_wire(self) -> list[Any]:
        return [PATCH, self.epoch, self.since, self.seq, self.ops]


@dataclass(frozen=True, slots=True)
class ViewDiff:
    """A view's change (§5.12): ``ops`` (net-change rules) take the view at any seq from
    ``since`` to ``seq - 1``, over which it did not change, to the view at ``seq``."""

    since: int
    seq: int
    ops: list[Any]

    def to_wire(self) -> list[Any]:
        return [VIEW_DIFF, self.since, self.seq, self.ops]


@dataclass(frozen=True, slots=True)
class View:
    """A client asks to see ``prefixes`` (True: all it may see) from now on (§5.12)."""

    prefixes: list[list[str]] | Literal[True]

    def to_wire(self) -> list[Any]:
        return [VIEW, self.prefixes]


@dataclass(frozen=True, slots=True)
class ViewSet:
    """The answer to VIEW (§5.12): the view is now ``prefixes``, and ``ops`` take the
    client's copy of the old view to the new one, at ``seq``."""

    seq: int
    prefixes: list[list[str]] | Literal[True]
    ops: list[Any]
    #: What the connection sees now (as WELCOME's ``view_tag``).
    view_tag: str | None = None

    def to_wire(self) -> list[Any]:
        if self.view_tag is None:
            return [VIEW_SET, self.seq, self.prefixes, self.ops]
        return [VIEW_SET, self.seq, self.prefixes, self.ops, self.view_tag]


@dataclass(frozen=True, slots=True)
class Error:
    aid: int | None
    code: str
    message: str

    def to_wire(self) -> list[Any]:
        return [ERROR, self.aid, self.code, self.message]


ClientMessage: TypeAlias = Hello | Action | Resync | View
ServerMessage: TypeAlias = Welcome | Snapshot | Diff | Ack | Error | Patch | ViewDiff | ViewSet
Message: TypeAlias = ClientMessage | ServerMessage

"""Frames to messages and back.

A WebSocket frame carries one or more messages as a msgpack stream. The server
decodes and checks a frame *whole* before acting on any message in it
(docs/protocol.md §4.2): if the third message of a frame is malformed, the
first two must not have taken effect, otherwise a client could not tell which
of its messages counted. Checking whole frames is also cheaper than it sounds:
decoding is a single pass of msgpack's C unpacker.

The server side is strict about what it accepts from clients (exact array
lengths, exact field types) and raises :class:`~statecast.protocol.errors.MalformedMessage`
(close 1007) for anything else. ACTION args are the one exception: they are any
msgpack value, because they are validated by the room, which answers bad args
with ERROR ``invalid`` rather than a close, so the decoder must let maps with
non-str keys, NaN, bytes and extension types through.

The client side is lenient where the protocol may grow: unknown message types,
extra trailing array elements and extra WELCOME keys are ignored, so an old
client keeps working against a server that adds an extension.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Literal, cast

import msgpack

from statecast.protocol.errors import MalformedMessage, MessageTooLarge
from statecast.protocol.messages import (
    ACK,
    ACTION,
    DIFF,
    ERROR,
    HELLO,
    PATCH,
    PROTOCOL_VERSION,
    RESYNC,
    ROLES,
    SNAPSHOT,
    SYNC_KINDS,
    VIEW,
    VIEW_DIFF,
    VIEW_SET,
    WELCOME,
    Ack,
    Action,
    ClientMessage,
    Diff,
    Error,
    Hello,
    Message,
    Patch,
    Resync,
    Role,
    ServerMessage,
    Snapshot,
    SyncKind,
    View,
    ViewDiff,
    ViewSet,
    Welcome,
)
from statecast.protocol.ops import MAX_SAFE_INT
from statecast.protocol.views import check_prefixes

DEFAULT_MAX_MESSAGE_BYTES: Final = 1 << 20


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def encode(message: Message) -> bytes:
    """One message as msgpack bytes."""
    return _pack(message.to_wire())


def encode_many(messages: Iterable[Message]) -> bytes:
    """Several messages as one msgpack stream (the payload of one frame)."""
    return b"".join(_pack(m.to_wire()) for m in messages)


def encode_diff(seq: int, ops: Sequence[Any]) -> bytes:
    """A DIFF, encoded once by the server and sent as-is to every subscriber."""
    return _pack([DIFF, seq, ops])


_VIEW_DIFF_HEAD: Final = b"\x94" + bytes((VIEW_DIFF,))


def encode_view_diff(since: int, seq: int, encoded_ops: bytes) -> bytes:
    """A VIEW_DIFF around its ops already encoded as one msgpack array (the same bytes for
    every view whose cut of a batch is the same)."""
    return b"".join((_VIEW_DIFF_HEAD, _pack(since), _pack(seq), encoded_ops))


def encode_op(op: Sequence[Any]) -> bytes:
    return _pack(op)


def encode_diff_parts(seq: int, encoded_ops: Sequence[bytes]) -> bytes:
    """A DIFF built from ops encoded one by one, as a room records them.

    Each op is encoded the moment it is recorded, before a later op of the same
    action can change the value it placed in the state.
    """
    return b"".join((_DIFF_HEAD, _pack(seq), _array_header(len(encoded_ops)), *encoded_ops))


_ACK_WITH_ANSWER_HEAD = bytes((0x94, ACK))


def encode_ack(aid: int, seq: int | None, answer: bytes | None = None) -> bytes:
    """An ACK; ``answer``, if given, is the handler's answer already encoded (the room
    encodes it once, when it checks its size) and becomes the fourth element."""
    if answer is None:
        return _pack([ACK, aid, seq])
    return b"".join((_ACK_WITH_ANSWER_HEAD, _pack(aid), _pack(seq), answer))


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


_DIFF_HEAD: Final = b"\x93" + bytes((DIFF,))


def encode_snapshot(epoch: str, seq: int, state: Any) -> bytes:
    return _pack([SNAPSHOT, epoch, seq, state])


class UnhashableKeyMap(list[tuple[Any, Any]]):
    """A msgpack map with an array or map as a key, kept as its list of pairs.

    Valid msgpack that no state can hold. It may only occur inside ACTION args,
    where the room rejects it with ERROR ``invalid``; anywhere else the shape
    checks below find a list where a map was required and answer 1007.
    """


def _pairs(pairs: list[tuple[Any, Any]]) -> Any:
    try:
        return dict(pairs)
    except TypeError:
        return UnhashableKeyMap(pairs)


def _unpack_all(data: bytes, **options: Any) -> list[Any]:
    unpacker = msgpack.Unpacker(
        raw=False, strict_map_key=False, max_buffer_size=len(data), timestamp=0, **options
    )
    unpacker.feed(data)
    values = []
    end = 0
    for value in unpacker:
        values.append(value)
        end = unpacker.tell()  # after a partial message tell() counts its bytes too
    if end != len(data):
        raise MalformedMessage("frame ends inside a message")
    return values


def iter_values(data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[Any]:
    """Split a frame into its msgpack values, or raise :class:`MalformedMessage`."""
    if len(data) > max_bytes:
        raise MessageTooLarge(f"message of {len(data)} bytes exceeds {max_bytes}")
    if not data:
        raise MalformedMessage("empty frame")
    try:
        try:
            return _unpack_all(data)
        except TypeError:
            # An unhashable map key: decode again, slower, keeping such maps as pairs.
            return _unpack_all(data, object_pairs_hook=_pairs)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.StackError) as exc:
        raise MalformedMessage(f"not valid msgpack: {exc or type(exc).__name__}") from None


def _is_int(v: Any) -> bool:
    return type(v) is int


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise MalformedMessage(what)


def _header(value: Any) -> int:
    _require(type(value) is list and len(value) > 0, "a message must be a non-empty array")
    kind = value[0]
    _require(_is_int(kind), "a message must start with its int type")
    return cast(int, kind)


def _decode_hello(value: list[Any]) -> Hello:
    _require(len(value) == 2 and type(value[1]) is dict, "HELLO is [1, map]")
    body: dict[Any, Any] = value[1]
    v = body.get("v")
    _require(_is_int(v), "HELLO needs an int 'v'")
    if v != PROTOCOL_VERSION:
        # The rest of a HELLO of another version may have other fields: only
        # 'v' is read, and the session answers 4000 (unsupported version).
        return Hello(v=cast(int, v), role="spectator")
    role = body.get("role")
    _require(type(role) is str and role in ROLES, "HELLO 'role' must be 'agent' or 'spectator'")
    token = body.get("token")
    _require(token is None or type(token) is str, "HELLO 'token' must be a str")
    client = body.get("client")
    _require(client is None or type(client) is str, "HELLO 'client' must be a str")
    resume = body.get("resume")
    parsed_resume: tuple[str, int] | None = None
    if resume is not None:
        _require(
            type(resume) is list
            and len(resume) == 2
            and type(resume[0]) is str
            and _is_int(resume[1])
            and resume[1] >= 0,
            "HELLO 'resume' is [epoch str, seq int >= 0]",
        )
        parsed_resume = (resume[0], resume[1])
    view = body.get("view")
    return Hello(
        v=PROTOCOL_VERSION,
        role=cast(Role, role),
        token=token,
        client=client,
        resume=parsed_resume,
        answers=body.get("answers") is True,  # anything else: the client did not ask
        patch=body.get("patch") is True,
        view=None if view is None else _view(view, "HELLO 'view'"),
        view_tag=_tag(body.get("view_tag")),
    )


def _tag(value: Any) -> str | None:
    return value if type(value) is str and len(value) <= 64 else None  # else: not said


def _view(value: Any, what: str) -> list[list[str]] | Literal[True]:
    if value is True:
        return True
    try:
        return check_prefixes(value, what)
    except ValueError as exc:
        raise MalformedMessage(str(exc)) from None


def _decode_action(value: list[Any]) -> Action:
    _require(len(value) == 4, "ACTION is [4, aid, name, args]")
    aid, name = value[1], value[2]
    _require(_is_int(aid) and 1 <= aid <= MAX_SAFE_INT, "ACTION aid must be an int >= 1")
    _require(type(name) is str, "ACTION name must be a str")
    return Action(aid=aid, name=name, args=value[3])


def _decode_resync(value: list[Any]) -> Resync:
    _require(
        len(value) == 3 and type(value[1]) is str and _is_int(value[2]) and value[2] >= 0,
        "RESYNC is [6, epoch str, seq int >= 0]",
    )
    return Resync(epoch=value[1], seq=value[2])


def _decode_view(value: list[Any]) -> View:
    _require(len(value) == 2, "VIEW is [11, prefixes]")
    return View(prefixes=_view(value[1], "VIEW's view"))


_CLIENT_DECODERS: dict[int, Callable[[list[Any]], ClientMessage]] = {
    HELLO: _decode_hello,
    ACTION: _decode_action,
    RESYNC: _decode_resync,
    VIEW: _decode_view,
}


def decode_client_frame(
    data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> list[ClientMessage]:
    """Every message of a client's frame, checked whole (server side)."""
    messages: list[ClientMessage] = []
    for value in iter_values(data, max_bytes):
        decoder = _CLIENT_DECODERS.get(_header(value))
        _require(decoder is not None, f"unknown client message type {value[0]!r}")
        assert decoder is not None
        messages.append(decoder(value))
    return messages


# --- client side ---------------------------------------------------------------------------


def _decode_welcome(value: list[Any]) -> Welcome:
    _require(len(value) >= 2 and type(value[1]) is dict, "WELCOME is [2, map]")
    b = value[1]
    _require(type(b.get("epoch")) is str, "WELCOME 'epoch' must be a str")
    _require(_is_int(b.get("seq")) and b["seq"] >= 0, "WELCOME 'seq' must be an int")
    _require(type(b.get("role")) is str and b["role"] in ROLES, "WELCOME 'role' is unknown")
    _require(b.get("client") is None or type(b.get("client")) is str, "WELCOME 'client'")
    _require(_is_int(b.get("acked")) and b["acked"] >= 0, "WELCOME 'acked' must be an int")
    _require(type(b.get("sync")) is str and b["sync"] in SYNC_KINDS, "WELCOME 'sync' is unknown")
    limit = b.get("max_message")
    view = b.get("view")
    return Welcome(
        epoch=b["epoch"],
        seq=b["seq"],
        role=cast(Role, b["role"]),
        client=b.get("client"),
        acked=b["acked"],
        sync=cast(SyncKind, b["sync"]),
        max_message=limit if _is_int(limit) and limit > 0 else None,  # ignored if malformed
        view=None if view is None else _view(view, "WELCOME 'view'"),
        view_tag=_tag(b.get("view_tag")),
    )


def _decode_snapshot(value: list[Any]) -> Snapshot:
    _require(
        len(value) >= 4 and type(value[1]) is str and _is_int(value[2]) and type(value[3]) is dict,
        "SNAPSHOT is [3, epoch, seq, state map]",
    )
    return Snapshot(epoch=value[1], seq=value[2], state=value[3])


def _decode_diff(value: list[Any]) -> Diff:
    _require(
        len(value) >= 3 and _is_int(value[1]) and type(value[2]) is list,
        "DIFF is [5, seq, ops]",
    )
    return Diff(seq=value[1], ops=value[2])


def _decode_ack(value: list[Any]) -> Ack:
    _require(
        len(value) >= 3 and _is_int(value[1]) and (value[2] is None or _is_int(value[2])),
        "ACK is [7, aid, seq|nil]",
    )
    return Ack(aid=value[1], seq=value[2], answer=value[3] if len(value) > 3 else None)


def _decode_error(value: list[Any]) -> Error:
    _require(
        len(value) >= 4
        and (value[1] is None or _is_int(value[1]))
        and type(value[2]) is str
        and type(value[3]) is str,
        "ERROR is [8, aid|nil, code, message]",
    )
    return Error(aid=value[1], code=value[2], message=value[3])


def _decode_patch(value: list[Any]) -> Patch:
    _require(
        len(value) >= 5
        and type(value[1]) is str
        and _is_int(value[2])
        and _is_int(value[3])
        and value[2] >= 0
        and value[3] > value[2]
        and type(value[4]) is list,
        "PATCH is [9, epoch, since, seq > since, ops]",
    )
    return Patch(epoch=value[1], since=value[2], seq=value[3], ops=value[4])


def _decode_view_diff(value: list[Any]) -> ViewDiff:
    _require(
        len(value) >= 4
        and _is_int(value[1])
        and _is_int(value[2])
        and 0 <= value[1] < value[2]
        and type(value[3]) is list,
        "VIEW_DIFF is [10, since, seq > since, ops]",
    )
    return ViewDiff(since=value[1], seq=value[2], ops=value[3])


def _decode_view_set(value: list[Any]) -> ViewSet:
    _require(
        len(value) >= 4 and _is_int(value[1]) and value[1] >= 0 and type(value[3]) is list,
        "VIEW_SET is [12, seq, prefixes, ops]",
    )
    tag = _tag(value[4]) if len(value) > 4 else None
    return ViewSet(
        seq=value[1], prefixes=_view(value[2], "VIEW_SET's view"), ops=value[3], view_tag=tag
    )


_SERVER_DECODERS: dict[int, Callable[[list[Any]], ServerMessage]] = {
    WELCOME: _decode_welcome,
    PATCH: _decode_patch,
    VIEW_DIFF: _decode_view_diff,
    VIEW_SET: _decode_view_set,
    SNAPSHOT: _decode_snapshot,
    DIFF: _decode_diff,
    ACK: _decode_ack,
    ERROR: _decode_error,
}


def decode_server_frame(data: bytes, max_bytes: int | None = None) -> list[ServerMessage]:
    """Every message of a server's frame (client side); unknown types are skipped."""
    values = iter_values(data, max_bytes if max_bytes is not None else max(len(data), 1))
    messages: list[ServerMessage] = []
    for value in values:
        decoder = _SERVER_DECODERS.get(_header(value))
        if decoder is not None:
            messages.append(decoder(value))
    return messages

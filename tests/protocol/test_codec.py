"""statecast.protocol.codec and .messages: frames to messages and back (no sockets)."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statecast.protocol import codec
from statecast.protocol.errors import MalformedMessage, MessageTooLarge
from statecast.protocol.messages import (
    Ack,
    Action,
    Diff,
    Error,
    Hello,
    Message,
    Resync,
    Snapshot,
    Welcome,
)
from tests.protocol.strategies import (
    FIELD_NAMES,
    MAX_SAFE_INT,
    documents,
    keys,
    same,
    values,
    wild_values,
)


def pack(*values: Any) -> bytes:
    return b"".join(msgpack.packb(v, use_bin_type=True) for v in values)


# --- encoding --------------------------------------------------------------------------------


def test_every_message_has_its_wire_form() -> None:
    """Each message encodes to the array docs/protocol.md's message table (§5.1) gives it."""
    w = Welcome("epoch1234", 3, "agent", "c", 2, "replay")
    cases: list[tuple[Message, list[Any]]] = [
        (Hello(1, "agent"), [1, {"v": 1, "role": "agent"}]),
        (
            Hello(1, "spectator", token="t", client="c", resume=("e", 4)),
            [1, {"v": 1, "role": "spectator", "token": "t", "client": "c", "resume": ["e", 4]}],
        ),
        (
            w,
            [
                2,
                {
                    "epoch": "epoch1234",
                    "seq": 3,
                    "role": "agent",
                    "client": "c",
                    "acked": 2,
                    "sync": "replay",
                },
            ],
        ),
        (Snapshot("e", 1, {"a": 1}), [3, "e", 1, {"a": 1}]),
        (Action(1, "patch", [[0, ["a"], 1]]), [4, 1, "patch", [[0, ["a"], 1]]]),
        (Diff(2, [[1, ["a"]]]), [5, 2, [[1, ["a"]]]]),
        (Resync("e", 5), [6, "e", 5]),
        (Ack(1, None), [7, 1, None]),
        (Ack(1, 9), [7, 1, 9]),
        (Error(None, "invalid", "m"), [8, None, "invalid", "m"]),
    ]
    for message, wire in cases:
        assert message.to_wire() == wire
        assert msgpack.unpackb(codec.encode(message), raw=False) == wire


def test_encode_many_is_a_msgpack_stream() -> None:
    """Several messages in one frame are their encodings concatenated."""
    messages: list[Message] = [Ack(1, 2), Diff(3, []), Error(2, "invalid", "x")]
    assert codec.encode_many(messages) == b"".join(codec.encode(m) for m in messages)
    assert codec.decode_server_frame(codec.encode_many(messages)) == messages


def test_encode_snapshot_and_diff_helpers_match_the_message_classes() -> None:
    """The server's fast encoders produce the same bytes as the message classes."""
    assert codec.encode_snapshot("e", 2, {"a": [1]}) == codec.encode(Snapshot("e", 2, {"a": [1]}))
    assert codec.encode_diff(4, [[0, ["a"], 1]]) == codec.encode(Diff(4, [[0, ["a"], 1]]))


@pytest.mark.parametrize("n", [0, 1, 15, 16, 65535, 65536])
def test_encode_diff_parts_matches_encode_diff_at_every_array_header(n: int) -> None:
    """Diffs built from separately encoded ops equal whole-diff encoding (fixarray, 16, 32)."""
    op = [1, ["k"]]
    parts = [codec.encode_op(op)] * n
    assert codec.encode_diff_parts(7, parts) == codec.encode_diff(7, [op] * n)


ops_strategy = st.lists(
    st.one_of(
        st.tuples(st.just(0), st.lists(keys | st.integers(0, 5), min_size=1, max_size=3), values),
        st.tuples(st.just(1), st.lists(keys | st.integers(0, 5), min_size=1, max_size=3)),
    ).map(list),
    max_size=20,
)


@given(st.integers(0, MAX_SAFE_INT), ops_strategy)
def test_encode_diff_parts_equals_encode_diff(seq: int, op_list: list[list[Any]]) -> None:
    """For any seq and ops, encode_diff_parts(seq, encoded ops) == encode_diff(seq, ops)."""
    parts = [codec.encode_op(op) for op in op_list]
    assert codec.encode_diff_parts(seq, parts) == codec.encode_diff(seq, op_list)


# --- round trips -----------------------------------------------------------------------------

epochs = st.from_regex(r"[A-Za-z0-9_-]{8,64}", fullmatch=True)
seqs = st.integers(0, MAX_SAFE_INT)
aids = st.integers(1, MAX_SAFE_INT)
roles = st.sampled_from(["agent", "spectator"])

client_messages = st.one_of(
    st.builds(
        Hello,
        v=st.just(1),
        role=roles,
        token=st.none() | st.text(max_size=10),
        client=st.none() | st.text(max_size=10),
        resume=st.none() | st.tuples(epochs, seqs),
    ),
    st.builds(Action, aid=aids, name=st.text(max_size=10), args=values),
    st.builds(Resync, epoch=epochs, seq=seqs),
)

server_messages = st.one_of(
    st.builds(
        Welcome,
        epoch=epochs,
        seq=seqs,
        role=roles,
        client=st.none() | st.text(max_size=10),
        acked=st.integers(0, MAX_SAFE_INT),
        sync=st.sampled_from(["snapshot", "replay", "current"]),
    ),
    st.builds(Snapshot, epoch=epochs, seq=seqs, state=documents),
    st.builds(Diff, seq=seqs, ops=ops_strategy),
    st.builds(Ack, aid=aids, seq=st.none() | seqs),
    st.builds(
        Error,
        aid=st.none() | aids,
        code=st.sampled_from(["invalid", "forbidden", "too_large"]),
        message=st.text(max_size=20),
    ),
)


def same_message(a: Any, b: Any) -> bool:
    return type(a) is type(b) and all(
        same(x, y) for x, y in zip(a.to_wire(), b.to_wire(), strict=True)
    )


@given(st.lists(client_messages, min_size=1, max_size=5))
def test_client_frames_round_trip(messages: list[Any]) -> None:
    """Client messages survive encode then decode_client_frame, types and all."""
    decoded = codec.decode_client_frame(codec.encode_many(messages))
    assert len(decoded) == len(messages)
    assert all(same_message(a, b) for a, b in zip(decoded, messages, strict=True))


@given(st.lists(server_messages, min_size=1, max_size=5))
def test_server_frames_round_trip(messages: list[Any]) -> None:
    """Server messages survive encode then decode_server_frame, types and all."""
    decoded = codec.decode_server_frame(codec.encode_many(messages))
    assert len(decoded) == len(messages)
    assert all(same_message(a, b) for a, b in zip(decoded, messages, strict=True))


# --- strict client-frame checks (server side) -------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\xc1",  # never used in msgpack
        b"\x92\x01",  # an array cut short
        pack([1, {"v": 1, "role": "agent"}])[:-1],
        pack({"not": "an array"}),
        pack([]),
        pack(["1", {}]),
        pack([9, 1]),
        pack([1, {"v": 1, "role": "agent"}, "extra"]),
        pack([1, "body"]),
        pack([1, {"role": "agent"}]),
        pack([1, {"v": "1", "role": "agent"}]),
        pack([1, {"v": 1, "role": "admin"}]),
        pack([1, {"v": 1, "role": "agent", "token": 5}]),
        pack([1, {"v": 1, "role": "agent", "client": b"c"}]),
        pack([1, {"v": 1, "role": "agent", "resume": "e:1"}]),
        pack([1, {"v": 1, "role": "agent", "resume": ["e"]}]),
        pack([1, {"v": 1, "role": "agent", "resume": ["e", -1]}]),
        pack([1, {"v": 1, "role": "agent", "resume": [1, 1]}]),
        pack([4, 1, "patch"]),
        pack([4, 0, "patch", []]),
        pack([4, -1, "patch", []]),
        pack([4, 2**53, "patch", []]),
        pack([4, 1.0, "patch", []]),
        pack([4, True, "patch", []]),
        pack([4, 1, b"patch", []]),
        pack([6, "e"]),
        pack([6, "e", -1]),
        pack([6, b"e", 1]),
        pack([6, "e", 1.5]),
        pack([7, 1, 1]),  # a server message type from a client
        pack([4, 1, "patch", []], [6, "e", "x"]),
        b"\x81\x91\x01\x02",  # a map keyed by an array, outside any ACTION args
    ],
)
def test_malformed_client_frames_raise_malformed_message(frame: bytes) -> None:
    """Anything that is not one of the client message forms is MalformedMessage (1007)."""
    with pytest.raises(MalformedMessage) as info:
        codec.decode_client_frame(frame)
    assert info.value.close_code == 1007


def test_oversize_frame_raises_message_too_large() -> None:
    """A frame over the limit is MessageTooLarge (1009), before any decoding."""
    with pytest.raises(MessageTooLarge) as info:
        codec.decode_client_frame(b"\x00" * 11, max_bytes=10)
    assert info.value.close_code == 1009
    assert codec.decode_client_frame(pack([6, "e", 0]), max_bytes=len(pack([6, "e", 0])))


def test_hello_of_another_version_reads_only_v() -> None:
    """A HELLO with v != 1 decodes whatever else it holds, so the session can answer 4000."""
    [hello] = codec.decode_client_frame(pack([1, {"v": 2, "role": 42, "future": [1]}]))
    assert isinstance(hello, Hello) and hello.v == 2


def test_action_args_accept_anything_msgpack_carries() -> None:
    """ACTION args with NaN, bytes, ext types, int and unhashable map keys still decode."""
    ext = msgpack.ExtType(5, b"\x01\x02")
    frame = pack(
        [4, 1, "a", math.nan],
        [4, 2, "a", b"\x00\xff"],
        [4, 3, "a", ext],
        [4, 4, "a", {1: "x", None: 2}],
        [4, 5, "a", [math.inf, -math.inf]],
        [4, 6, "a", 2**64 - 1],
    )
    # A map whose key is an array, and one whose key is a map (not constructible in Python).
    frame += b"\x94\x04\x07\xa1a" + b"\x81\x92\x01\x02\xa1v"
    frame += b"\x94\x04\x08\xa1a" + b"\x81\x81\xa1k\x01\xc0"
    # A timestamp ext (-1), which the decoder keeps as msgpack.Timestamp.
    frame += b"\x94\x04\x09\xa1a" + msgpack.packb(msgpack.Timestamp(1, 0))
    messages = codec.decode_client_frame(frame)
    assert [m.aid for m in messages if isinstance(m, Action)] == list(range(1, 10))
    args = [m.args for m in messages if isinstance(m, Action)]
    assert math.isnan(args[0])
    assert args[1] == b"\x00\xff"
    assert args[2] == ext
    assert args[3] == {1: "x", None: 2}
    assert args[5] == 2**64 - 1
    assert isinstance(args[6], codec.UnhashableKeyMap) and args[6] == [([1, 2], "v")]
    assert isinstance(args[7], codec.UnhashableKeyMap)
    assert args[7] == [({"k": 1}, None)]
    assert isinstance(args[8], msgpack.Timestamp)


def test_unhashable_key_map_is_never_a_message_or_body() -> None:
    """A map keyed by an array, as a whole message or a HELLO body, is malformed."""
    with pytest.raises(MalformedMessage):
        codec.decode_client_frame(b"\x92\x01\x81\x91\x01\x02")
    with pytest.raises(MalformedMessage):
        codec.decode_client_frame(b"\x81\x91\x01\x02")


client_fuzz_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=5)
    | st.binary(max_size=5)
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=4)),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(max_size=3) | st.integers(-(2**63), 2**64 - 1) | st.none(), children, max_size=3
        )
    ),
    max_leaves=10,
)


@settings(max_examples=300)
@given(st.integers(1, MAX_SAFE_INT), st.text(max_size=8), client_fuzz_values)
def test_any_action_args_decode(aid: int, name: str, args: Any) -> None:
    """Whatever msgpack value ACTION args hold, the frame decodes to that ACTION."""
    [message] = codec.decode_client_frame(pack([4, aid, name, args]))
    assert isinstance(message, Action) and message.aid == aid and message.name == name


def _decodes_faithfully(data: bytes) -> None:
    """Each decoder either raises one of the two protocol errors or returns messages that
    are what they decoded: encoded again and decoded again, they encode to the same bytes
    (so a decoder that returned garbage, or dropped or changed a field, fails here)."""
    for decode in (codec.decode_client_frame, codec.decode_server_frame):
        try:
            messages = decode(data)
        except (MalformedMessage, MessageTooLarge):
            continue
        if not messages:  # only message types a client skips (§5.1): nothing to compare
            continue
        encoded = [codec.encode(m) for m in messages]
        again = decode(b"".join(encoded))
        assert [codec.encode(m) for m in again] == encoded


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_decoders_raise_only_protocol_errors_on_arbitrary_bytes(data: bytes) -> None:
    """Arbitrary bytes either decode faithfully or raise MalformedMessage / MessageTooLarge."""
    _decodes_faithfully(data)


@settings(max_examples=300)
@given(st.lists(client_fuzz_values, min_size=1, max_size=3), st.binary(max_size=4))
def test_decoders_raise_only_protocol_errors_on_any_msgpack(
    values_: list[Any], tail: bytes
) -> None:
    """Valid msgpack of any shape, with junk after it, never raises beyond the two errors,
    and what decodes round-trips."""
    _decodes_faithfully(pack(*values_) + tail)


def test_deep_nesting_is_malformed_not_a_crash() -> None:
    """A frame nested deeper than the unpacker's stack is MalformedMessage."""
    data = b"\x91" * 5000 + b"\xc0"
    with pytest.raises(MalformedMessage):
        codec.decode_client_frame(data)


# --- lenient server-frame decoding (client side) ----------------------------------------------


def test_server_frames_skip_unknown_types_and_extra_fields() -> None:
    """A client ignores unknown message types, extra trailing elements and extra WELCOME keys."""
    welcome = {
        "epoch": "abcdefgh",
        "seq": 1,
        "role": "agent",
        "client": None,
        "acked": 0,
        "sync": "current",
        "future": True,
    }
    frame = pack([99, "x"], [2, welcome, "more"], [7, 1, None, None, "more"], [5, 2, [], 0])
    assert codec.decode_server_frame(frame) == [
        Welcome("abcdefgh", 1, "agent", None, 0, "current"),
        Ack(1, None),
        Diff(2, []),
    ]


@pytest.mark.parametrize(
    "value",
    [
        [2, "w"],
        [2, {"epoch": 1}],
        [2, {"epoch": "e", "seq": -1}],
        [2, {"epoch": "e", "seq": 0, "role": "x"}],
        [2, {"epoch": "e", "seq": 0, "role": "agent", "client": 1}],
        [2, {"epoch": "e", "seq": 0, "role": "agent", "client": None, "acked": "0"}],
        [2, {"epoch": "e", "seq": 0, "role": "agent", "client": None, "acked": 0, "sync": "x"}],
        [3, "e", 0, []],
        [3, "e", "0", {}],
        [5, 1],
        [5, 1, {}],
        [7, 1, "1"],
        [7, None, 1],
        [8, "1", "invalid", "m"],
        [8, 1, 2, "m"],
        [8, 1, "invalid"],
        ["x"],
    ],
)
def test_malformed_server_messages_raise(value: list[Any]) -> None:
    """A known server message type in the wrong shape is MalformedMessage."""
    with pytest.raises(MalformedMessage):
        codec.decode_server_frame(pack(value))


def test_server_frame_limit_is_optional() -> None:
    """decode_server_frame enforces a limit only when given one."""
    frame = pack([7, 1, 2])
    assert codec.decode_server_frame(frame) == [Ack(1, 2)]
    with pytest.raises(MessageTooLarge):
        codec.decode_server_frame(frame, max_bytes=1)


shaped_messages = st.builds(
    lambda kind, body, rest: [kind, body, *rest],
    st.integers(0, 9),
    st.dictionaries(st.sampled_from(FIELD_NAMES), wild_values, max_size=7)
    | st.fixed_dictionaries(
        {"v": st.just(1)}, optional={k: wild_values for k in FIELD_NAMES if k != "v"}
    )
    | wild_values,
    st.lists(wild_values, max_size=3),
)


@settings(max_examples=400)
@given(st.lists(shaped_messages, min_size=1, max_size=3))
def test_decoders_survive_message_shaped_junk(messages: list[Any]) -> None:
    """Arrays shaped like messages, with fields of any type, decode faithfully or raise the
    two errors only."""
    _decodes_faithfully(pack(*messages))

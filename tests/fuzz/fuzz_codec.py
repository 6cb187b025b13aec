"""Coverage-guided fuzzing of statecast's frame decoders and client sync machine (atheris).

Not collected by pytest (no ``test_`` prefix); run by hand from the repository root::

    .venv/bin/pip install atheris
    .venv/bin/python tests/fuzz/fuzz_codec.py -max_total_time=60 [corpus_dir]

Each input is one WebSocket frame payload, fed three ways:

* :func:`statecast.protocol.codec.decode_client_frame` (what the server does with every
  frame) may only raise :class:`~statecast.protocol.errors.MalformedMessage` or
  :class:`~statecast.protocol.errors.MessageTooLarge`, and what it accepts must survive
  an encode/decode round trip unchanged;
* :func:`statecast.protocol.codec.decode_server_frame` may only raise MalformedMessage;
* a :class:`~statecast.protocol.sync.ClientSync` that has joined (WELCOME + SNAPSHOT)
  and is fed the frame may only raise MalformedMessage, whatever DIFF, ACK or
  SNAPSHOT the frame claims to hold.

Anything else (a TypeError, a KeyError, a RecursionError, a hang) is a crash
that atheris reports with the input that caused it.
"""

from __future__ import annotations

import sys
from typing import Any

import atheris
import msgpack

with atheris.instrument_imports():
    from statecast.protocol import codec
    from statecast.protocol.errors import MalformedMessage, MessageTooLarge
    from statecast.protocol.messages import Action, Hello, Resync, Snapshot, Welcome
    from statecast.protocol.sync import ClientSync

MAX_BYTES = 64 * 1024


def _packed(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def check_client_frame(data: bytes) -> None:
    try:
        messages = codec.decode_client_frame(data, MAX_BYTES)
    except (MalformedMessage, MessageTooLarge):
        return
    again = codec.decode_client_frame(codec.encode_many(messages), MAX_BYTES)
    assert len(again) == len(messages)
    for first, second in zip(messages, again, strict=True):
        assert type(first) is type(second)
        if isinstance(first, Action):
            assert isinstance(second, Action)
            assert (first.aid, first.name) == (second.aid, second.name)
            assert _packed(first.args) == _packed(second.args)
        elif isinstance(first, (Hello, Resync)) and not (isinstance(first, Hello) and first.v != 1):
            assert first == second, (first, second)


def check_server_frame(data: bytes) -> None:
    try:
        codec.decode_server_frame(data)
    except MalformedMessage:
        return


def joined_sync() -> ClientSync:
    sync = ClientSync(role="agent", client="fuzz")
    sync.connect()
    sync.data_to_send()
    welcome = Welcome("epoch-fuzz", 3, "agent", "fuzz", 0, "snapshot")
    state = {"a": [1, 2, {"b": "c"}], "d": {"e": None}}
    sync.receive_frame(codec.encode_many([welcome, Snapshot("epoch-fuzz", 3, state)]))
    sync.act("patch", [])
    sync.events_received()
    sync.data_to_send()
    return sync


def check_sync(data: bytes) -> None:
    sync = joined_sync()
    try:
        sync.receive_frame(data)
    except MalformedMessage:
        return
    sync.events_received()
    sync.data_to_send()


def test_one_input(data: bytes) -> None:
    check_client_frame(data)
    check_server_frame(data)
    check_sync(data)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

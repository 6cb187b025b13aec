"""Epochs: a room's line of history, and starting a new one.

A new epoch starts at seq 0, and its seq-0 state is the state it starts from:
seq counts the diffs since the epoch began (docs/protocol.md §2.4). So when a room's
history is lost (a write the store did not keep, keys Redis no longer has), the
room goes on from the state it still has as the checkpoint at seq 0 of a fresh
epoch, with an empty log; each client's last processed aid is kept, so nothing
acknowledged is applied twice.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

import msgpack

from statecast.protocol import ops
from statecast.server.store.base import RoomRecord


def new_epoch() -> str:
    """A fresh epoch: 16 characters of [A-Za-z0-9_-]."""
    return secrets.token_urlsafe(12)


def fold(checkpoint_state: bytes, diffs: Iterable[tuple[int, bytes]]) -> bytes:
    """The encoded state after applying the logged DIFFs to the checkpoint.

    The log is the room's own, checked when it was written, so its ops apply as they are.
    """
    state: dict[str, Any] = msgpack.unpackb(checkpoint_state, raw=False)
    for _, encoded in diffs:
        _, _, diff_ops = msgpack.unpackb(encoded, raw=False)
        ops.apply_ops(state, diff_ops)
    return bytes(msgpack.packb(state, use_bin_type=True))


def starting(type_name: str, state: bytes, acked: dict[str, int] | None = None) -> RoomRecord:
    """A room on a new epoch whose seq 0 holds ``state`` (encoded), with an empty log."""
    return RoomRecord(
        epoch=new_epoch(),
        type_name=type_name,
        checkpoint_seq=0,
        checkpoint_state=state,
        acked=dict(acked or {}),
    )


def restarted(record: RoomRecord) -> RoomRecord:
    """``record`` on a new epoch whose seq 0 holds its head state, with an empty log and
    the same acknowledged aids and answers."""
    fresh = starting(record.type_name, fold(record.checkpoint_state, record.diffs), record.acked)
    fresh.answers = dict(record.answers)
    return fresh

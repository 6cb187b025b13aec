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


def restarted(record: RoomRecord, state: bytes | None = None) -> RoomRecord:
    """``record`` on a new epoch whose seq 0 holds ``state`` (default: the record's head
    state), with an empty log and the same acknowledged aids."""
    if state is None:
        state = fold(record.checkpoint_state, record.diffs)
    return RoomRecord(
        epoch=new_epoch(),
        type_name=record.type_name,
        checkpoint_seq=0,
        checkpoint_state=state,
        acked=dict(record.acked),
    )

"""The client's sync state machine: bytes in, events out, bytes to send. No I/O.

:class:`ClientSync` is what a statecast client *is*, minus the socket. Feed it
every frame the server sends (:meth:`ClientSync.receive_frame`), read what
happened (:meth:`ClientSync.events_received`), and write whatever it wants sent
(:meth:`ClientSync.data_to_send`). The asyncio client, the load harness and the
tests all drive this one object, in the way websockets' ``Protocol`` and h11's
``Connection`` are driven.

Rules it keeps (docs/protocol.md §6; §6.9 is this machine in prose):

* A connection starts with HELLO, carrying ``resume = (epoch, seq)`` whenever
  the client holds a state; the server answers WELCOME with ``sync`` telling
  what follows: a SNAPSHOT, a replay of DIFFs, or nothing (``current``).
* A DIFF whose seq is not above the client's own is a duplicate and is ignored.
  A DIFF that skips ahead means something was lost: the client asks once with
  RESYNC and ignores further gapped DIFFs until the gap is filled, by DIFFs
  from the server's answer or by a SNAPSHOT.
* A SNAPSHOT may arrive at any time after WELCOME (a slow subscriber is skipped
  ahead with one); it replaces state, epoch and seq.
* With a view (docs/protocol.md §5.12) the client's seq moves only when its view
  changes: a VIEW_DIFF names the seq it follows (``since``); one whose ``since`` is
  above the client's seq means one was lost, and is answered by RESYNC as a gap is.
  A view asked for while away is asked for by the next HELLO, without ``resume`` (the
  copy held is of the old view).
* Actions are numbered with aids that strictly increase per (room, client)
  across reconnects. An action stays pending until ACK or ERROR. After a
  reconnect the client re-sends exactly the pending actions whose aid is above
  the WELCOME's ``acked``; a pending action at or below ``acked`` was processed
  while the client was away and its outcome will not be repeated, so it is
  reported as :class:`ActionAcked` with ``seq=None``.

The states, as a table (h11 style)::

    state        on                              next
    ----------   -----------------------------   ----------
    IDLE         connect()                       JOINING
    JOINING      WELCOME sync=snapshot           SYNCING
    JOINING      WELCOME sync=replay|current     LIVE
    SYNCING      SNAPSHOT                        LIVE
    LIVE         DIFF with a gap                 RESYNCING
    RESYNCING    DIFF that fills the gap         LIVE
    RESYNCING    SNAPSHOT                        LIVE
    any          connection_lost()               IDLE
    any          close()                         CLOSED
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

from statecast.protocol import codec, ops
from statecast.protocol.errors import MalformedMessage, OutOfOrder, Rejection
from statecast.protocol.messages import (
    PROTOCOL_VERSION,
    Ack,
    Action,
    Diff,
    Error,
    Hello,
    Patch,
    Resync,
    Role,
    ServerMessage,
    Snapshot,
    View,
    ViewDiff,
    ViewSet,
    Welcome,
)
from statecast.protocol.netchange import apply_net_change
from statecast.protocol.views import apply_view_ops, check_prefixes, wire_prefixes


class SyncState(enum.Enum):
    IDLE = "idle"
    JOINING = "joining"
    SYNCING = "syncing"
    LIVE = "live"
    RESYNCING = "resyncing"
    CLOSED = "closed"


# (state, what happened) -> next state. Anything absent is a protocol error from the server.
TRANSITIONS: Final[dict[tuple[SyncState, str], SyncState]] = {
    (SyncState.IDLE, "connect"): SyncState.JOINING,
    (SyncState.JOINING, "welcome:snapshot"): SyncState.SYNCING,
    (SyncState.JOINING, "welcome:replay"): SyncState.LIVE,
    (SyncState.JOINING, "welcome:patch"): SyncState.LIVE,  # the PATCH follows
    (SyncState.JOINING, "welcome:current"): SyncState.LIVE,
    (SyncState.SYNCING, "snapshot"): SyncState.LIVE,
    (SyncState.LIVE, "snapshot"): SyncState.LIVE,
    (SyncState.LIVE, "gap"): SyncState.RESYNCING,
    (SyncState.RESYNCING, "snapshot"): SyncState.LIVE,
    (SyncState.RESYNCING, "gap_filled"): SyncState.LIVE,
}


# --- events ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Welcomed:
    welcome: Welcome


@dataclass(frozen=True, slots=True)
class StateReplaced:
    """A SNAPSHOT replaced the whole state."""

    epoch: str
    seq: int
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Changed:
    """A DIFF was applied; the client's state is now at ``seq``."""

    seq: int
    ops: list[Any]


@dataclass(frozen=True, slots=True)
class ActionAcked:
    """The action was processed; ``seq`` is None when its outcome was not repeated.

    ``answer`` is the handler's answer (None: it gave none). ``answer_known`` is False
    when the action was processed while the client was away and a later one of its
    actions was too: the room keeps only the last answer (docs/protocol.md §5.8).
    """

    aid: int
    seq: int | None
    answer: Any = None
    answer_known: bool = True


@dataclass(frozen=True, slots=True)
class ActionRejected:
    aid: int
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class ServerNotice:
    """An ERROR with aid nil: a non-fatal complaint about the connection."""

    code: str
    message: str


Event: TypeAlias = Welcomed | StateReplaced | Changed | ActionAcked | ActionRejected | ServerNotice


@dataclass(slots=True)
class PendingAction:
    aid: int
    name: str
    args: Any
    sent: bool = False


class ClientSync:
    """One client's view of one room, across any number of connections."""

    def __init__(
        self,
        role: Role = "agent",
        client: str | None = None,
        token: str | None = None,
        net_change: bool = True,
        view: list[list[str]] | None = None,
    ):
        #: Ask for PATCH (net-change catch-up, docs/protocol.md §5.11); False: replay or
        #: SNAPSHOT only, for a client that must see every change.
        self.net_change = net_change
        #: The view to ask for (docs/protocol.md §5.12): path prefixes, or True (the
        #: default) for all the connection may see: the whole room, but other agents'
        #: private parts and what its token does not grant.
        self.view: list[list[str]] | Literal[True] = _canonical(view)
        #: The view the state held is a copy of (None: no state yet).
        self._held_view: list[list[str]] | Literal[True] | None = None
        self.role: Role = role
        self.client = client
        self.token = token
        self.state_kind = SyncState.IDLE
        self.epoch: str | None = None
        self.seq = 0
        self.state: dict[str, Any] | None = None
        self.acked = 0
        self.welcomed = False
        self._last_aid = 0
        self._asked_view = self.view
        #: The server's name for what the held state is a copy of (WELCOME, VIEW_SET).
        self._view_tag: str | None = None
        self._pending: dict[int, PendingAction] = {}
        self._out: list[bytes] = []
        self._events: list[Event] = []

    # --- inputs --------------------------------------------------------------------------

    def connect(self) -> None:
        """A new connection is open: queue its HELLO (resuming if we hold a state)."""
        self._transition("connect")
        resume = None
        if self.epoch is not None and self._held_view == self.view:
            resume = (self.epoch, self.seq)
        self._asked_view = self.view
        hello = Hello(
            v=PROTOCOL_VERSION,
            role=self.role,
            token=self.token,
            client=self.client,
            resume=resume,
            answers=True,
            patch=self.net_change,
            view=self.view,
            view_tag=self._view_tag if resume is not None else None,
        )
        self._out.append(codec.encode(hello))

    def set_view(self, prefixes: list[list[str]] | None) -> None:
        """See ``prefixes`` from now on (None: all it may see; raises ValueError for a
        malformed view). Sent now as VIEW if connected, else asked for by the next HELLO."""
        self.view = _canonical(prefixes)
        if self.state_kind in (SyncState.SYNCING, SyncState.LIVE, SyncState.RESYNCING):
            self._out.append(codec.encode(View(self.view)))

    def connection_lost(self) -> None:
        if self.state_kind is not SyncState.CLOSED:
            self.state_kind = SyncState.IDLE
        for p in self._pending.values():
            p.sent = False
        self._out.clear()

    def close(self) -> None:
        self.state_kind = SyncState.CLOSED
        self._out.clear()

    def act(self, name: str, args: Any) -> int:
        """Queue an action and return its aid. Sent now if live, else after the next WELCOME."""
        if self.role != "agent":
            raise OutOfOrder("spectators cannot act")
        if not self.welcomed:
            raise OutOfOrder("act() before the first WELCOME: aids continue from its 'acked'")
        self._last_aid = max(self._last_aid, self.acked) + 1
        pending = PendingAction(self._last_aid, name, args)
        self._pending[pending.aid] = pending
        if self.state_kind in (SyncState.SYNCING, SyncState.LIVE, SyncState.RESYNCING):
            self._send_action(pending)
        return pending.aid

    def receive_frame(self, data: bytes) -> None:
        """Process one frame from the server; raises MalformedMessage on a bad one."""
        for message in codec.decode_server_frame(data):
            self._receive(message)

    # --- outputs -------------------------------------------------------------------------

    def data_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def events_received(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    @property
    def pending(self) -> list[int]:
        return sorted(self._pending)

    @property
    def live(self) -> bool:
        return self.state_kind is SyncState.LIVE

    # --- internals -----------------------------------------------------------------------

    def _transition(self, what: str) -> None:
        nxt = TRANSITIONS.get((self.state_kind, what))
        if nxt is None:
            raise MalformedMessage(f"unexpected {what} in state {self.state_kind.value}")
        self.state_kind = nxt

    def _send_action(self, pending: PendingAction) -> None:
        pending.sent = True
        self._out.append(codec.encode(Action(pending.aid, pending.name, pending.args)))

    def _receive(self, message: ServerMessage) -> None:
        if isinstance(message, Diff):
            self._on_diff(message)
        elif isinstance(message, Patch):
            self._on_patch(message)
        elif isinstance(message, ViewDiff):
            self._on_view_diff(message)
        elif isinstance(message, ViewSet):
            self._on_view_set(message)
        elif isinstance(message, Snapshot):
            self._on_snapshot(message)
        elif isinstance(message, Ack):
            self._resolve(message.aid, ActionAcked(message.aid, message.seq, message.answer))
        elif isinstance(message, Error):
            if message.aid is None:
                self._events.append(ServerNotice(message.code, message.message))
            else:
                self._resolve(
                    message.aid, ActionRejected(message.aid, message.code, message.message)
                )
        elif isinstance(message, Welcome):
            self._on_welcome(message)

    def _on_welcome(self, w: Welcome) -> None:
        self._transition(f"welcome:{w.sync}")
        if w.sync != "snapshot" and (self.epoch != w.epoch or self.seq > w.seq):
            raise MalformedMessage("WELCOME says replay/current for a state we do not hold")
        self.welcomed = True
        self._held_view = self._asked_view
        self._view_tag = w.view_tag
        if self.view != self._asked_view:  # set_view() while the HELLO was on its way
            self._out.append(codec.encode(View(self.view)))
        self.client = w.client if w.client is not None else self.client
        self.acked = w.acked
        self._last_aid = max(self._last_aid, w.acked)
        self._events.append(Welcomed(w))
        for aid in sorted(self._pending):
            if aid < w.acked:  # processed while away, and a later one too: answer gone
                self._resolve(aid, ActionAcked(aid, None, answer_known=False))
        # The rest are sent again, w.acked included: the room answers its last aid with
        # ACK [7, aid, nil, answer?], its recorded answer (§5.8), and applies nothing.
        for aid in sorted(self._pending):
            self._send_action(self._pending[aid])

    def _on_snapshot(self, s: Snapshot) -> None:
        self._transition("snapshot")
        self.epoch, self.seq, self.state = s.epoch, s.seq, s.state
        self._events.append(StateReplaced(s.epoch, s.seq, s.state))

    def _on_diff(self, d: Diff) -> None:
        if self.state_kind not in (SyncState.LIVE, SyncState.RESYNCING) or self.state is None:
            raise MalformedMessage(f"DIFF in state {self.state_kind.value}")
        if d.seq <= self.seq:
            return  # a duplicate: already applied
        if d.seq > self.seq + 1:
            self._gap()
            return
        try:
            ops.apply_wire_ops(self.state, d.ops)
        except Rejection as exc:
            raise MalformedMessage(f"DIFF {d.seq} does not apply: {exc}") from None
        self._applied(d.seq, d.ops)

    def _gap(self) -> None:
        """Something was lost: ask once with RESYNC, and ignore what comes until it is
        filled (§6.6)."""
        if self.state_kind is SyncState.LIVE:
            self._transition("gap")
            assert self.epoch is not None
            self._out.append(codec.encode(Resync(self.epoch, self.seq)))

    def _applied(self, seq: int, applied: list[Any]) -> None:
        self.seq = seq
        if self.state_kind is SyncState.RESYNCING:
            self._transition("gap_filled")
        self._events.append(Changed(seq, applied))

    def _on_patch(self, p: Patch) -> None:
        """The net change from our seq to ``p.seq`` (docs/protocol.md §5.11), applied all or
        nothing; reported as one Changed holding every touched path."""
        if self.state_kind not in (SyncState.LIVE, SyncState.RESYNCING) or self.state is None:
            raise MalformedMessage(f"PATCH in state {self.state_kind.value}")
        if p.epoch == self.epoch and p.seq <= self.seq:
            return  # already there (a SNAPSHOT overtook the RESYNC it answers)
        # A net change from an older seq covers every change since it, so it brings any
        # state between its since and its seq to its seq.
        if p.epoch != self.epoch or not p.since <= self.seq < p.seq:
            raise MalformedMessage(f"PATCH from {p.since} of another state than ours")
        try:
            apply_net_change(self.state, ops.parse_ops(p.ops))
        except Rejection as exc:
            raise MalformedMessage(f"PATCH to {p.seq} does not apply: {exc}") from None
        self._applied(p.seq, p.ops)

    def _on_view_diff(self, d: ViewDiff) -> None:
        """A view's change: it follows ``d.since``; applies to a copy at any seq from
        there to ``d.seq - 1`` (the view did not change in between), else a loss."""
        if self.state_kind not in (SyncState.LIVE, SyncState.RESYNCING) or self.state is None:
            raise MalformedMessage(f"VIEW_DIFF in state {self.state_kind.value}")
        if d.seq <= self.seq:
            return  # a duplicate: already applied
        if d.since > self.seq:
            self._gap()
            return
        try:
            apply_view_ops(self.state, ops.parse_ops(d.ops))
        except Rejection as exc:
            raise MalformedMessage(f"VIEW_DIFF {d.seq} does not apply: {exc}") from None
        self._applied(d.seq, d.ops)

    def _on_view_set(self, v: ViewSet) -> None:
        """The answer to VIEW: the copy of the old view becomes the new one, at ``v.seq``
        (a copy still waiting for a RESYNC's answer keeps its seq: that answer, from its
        seq, brings the rest)."""
        if self.state is None:
            raise MalformedMessage("VIEW_SET before any state")
        try:
            apply_net_change(self.state, ops.parse_ops(v.ops))
        except Rejection as exc:
            raise MalformedMessage(f"VIEW_SET does not apply: {exc}") from None
        self._held_view = v.prefixes
        self._view_tag = v.view_tag
        if self.state_kind is SyncState.LIVE:
            self.seq = max(self.seq, v.seq)
        self._events.append(Changed(self.seq, v.ops))

    def _resolve(self, aid: int, event: ActionAcked | ActionRejected) -> None:
        self._pending.pop(aid, None)
        self._events.append(event)


def _canonical(view: list[list[str]] | None) -> list[list[str]] | Literal[True]:
    return True if view is None else wire_prefixes(check_prefixes(view))


def replay_frames(frames: Iterable[bytes], sync: ClientSync) -> list[Event]:
    """Feed several frames and return every event (a convenience for tests and tools)."""
    events: list[Event] = []
    for frame in frames:
        sync.receive_frame(frame)
        events.extend(sync.events_received())
    return events

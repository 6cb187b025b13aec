"""statecast.protocol.sync: the client state machine, fed frames by hand (no sockets)."""

from __future__ import annotations

import copy
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statecast.protocol import codec
from statecast.protocol.errors import MalformedMessage, OutOfOrder
from statecast.protocol.messages import (
    Ack,
    Action,
    Diff,
    Error,
    Hello,
    Resync,
    Snapshot,
    Welcome,
)
from statecast.protocol.sync import (
    ActionAcked,
    ActionRejected,
    Changed,
    ClientSync,
    ServerNotice,
    StateReplaced,
    SyncState,
    Welcomed,
    replay_frames,
)
from tests.protocol.strategies import RefError, doc_and_ops, ref_apply, same, wild_values

EPOCH = "epoch-0001"


def welcome(sync: str = "snapshot", seq: int = 0, acked: int = 0, **kw: Any) -> bytes:
    fields: dict[str, Any] = {
        "epoch": EPOCH,
        "seq": seq,
        "role": "agent",
        "client": "c1",
        "acked": acked,
        "sync": sync,
    }
    fields.update(kw)
    return codec.encode(Welcome(**fields))


def sent(sync: ClientSync) -> list[Any]:
    return [m for frame in sync.data_to_send() for m in codec.decode_client_frame(frame)]


def joined(state: dict[str, Any] | None = None, seq: int = 0) -> ClientSync:
    """An agent that connected, was welcomed with a snapshot and is live."""
    sync = ClientSync("agent", client="c1")
    sync.connect()
    sync.data_to_send()
    sync.receive_frame(welcome(seq=seq) + codec.encode(Snapshot(EPOCH, seq, state or {})))
    sync.events_received()
    assert sync.live
    return sync


def test_connect_sends_hello_and_resumes_once_a_state_is_held() -> None:
    """The first HELLO has no resume; after a snapshot, a reconnect resumes from (epoch, seq)."""
    sync = ClientSync("agent", client="c1", token="tok")
    sync.connect()
    assert sent(sync) == [
        Hello(1, "agent", token="tok", client="c1", answers=True, patch=True, view=True)
    ]
    assert sync.state_kind is SyncState.JOINING
    sync.receive_frame(welcome(seq=4) + codec.encode(Snapshot(EPOCH, 4, {"a": 1})))
    events = sync.events_received()
    assert isinstance(events[0], Welcomed)
    assert events[1] == StateReplaced(EPOCH, 4, {"a": 1})
    assert sync.live and sync.state == {"a": 1} and sync.seq == 4
    sync.connection_lost()
    assert sync.state_kind is SyncState.IDLE
    sync.connect()
    assert sent(sync) == [
        Hello(
            1,
            "agent",
            token="tok",
            client="c1",
            resume=(EPOCH, 4),
            answers=True,
            patch=True,
            view=True,
        )
    ]


def test_welcome_current_and_replay_go_live_without_snapshot() -> None:
    """sync=current means up to date; sync=replay is followed by DIFFs from resume.seq + 1."""
    sync = joined({"n": 0}, 2)
    sync.connection_lost()
    sync.connect()
    sync.receive_frame(welcome("current", seq=2))
    assert sync.live and sync.seq == 2
    sync.connection_lost()
    sync.connect()
    sync.receive_frame(welcome("replay", seq=3) + codec.encode(Diff(3, [[0, ["n"], 1]])))
    assert sync.state == {"n": 1} and sync.seq == 3
    assert [type(e) for e in sync.events_received()] == [Welcomed, Welcomed, Changed]


def test_welcome_replay_for_a_state_not_held_is_malformed() -> None:
    """A server answering replay/current to another epoch, or behind us, breaks the protocol."""
    sync = joined({}, 5)
    sync.connection_lost()
    sync.connect()
    with pytest.raises(MalformedMessage):
        sync.receive_frame(welcome("current", seq=4))
    fresh = ClientSync()
    fresh.connect()
    with pytest.raises(MalformedMessage):
        fresh.receive_frame(welcome("replay", seq=0))


@pytest.mark.parametrize(
    "frame",
    [
        codec.encode(Diff(1, [])),
        codec.encode(Snapshot(EPOCH, 0, {})),
    ],
)
def test_messages_before_welcome_are_malformed(frame: bytes) -> None:
    """A DIFF or SNAPSHOT before WELCOME is a server protocol error."""
    sync = ClientSync()
    sync.connect()
    with pytest.raises(MalformedMessage):
        sync.receive_frame(frame)


def test_diff_before_snapshot_and_second_welcome_are_malformed() -> None:
    """Between WELCOME(snapshot) and its SNAPSHOT a DIFF is an error; so is a second WELCOME."""
    sync = ClientSync()
    sync.connect()
    sync.receive_frame(welcome())
    with pytest.raises(MalformedMessage):
        sync.receive_frame(codec.encode(Diff(1, [])))
    live = joined()
    with pytest.raises(MalformedMessage):
        live.receive_frame(welcome())


def test_diff_that_does_not_apply_is_malformed() -> None:
    """A DIFF whose ops fail on the client's state means the server broke the protocol."""
    sync = joined()
    with pytest.raises(MalformedMessage):
        sync.receive_frame(codec.encode(Diff(1, [[1, ["missing"]]])))


def test_snapshot_may_arrive_any_time_after_welcome() -> None:
    """A SNAPSHOT while live replaces state, epoch and seq (a lagging subscriber skipped ahead)."""
    sync = joined({"a": 1}, 1)
    sync.receive_frame(codec.encode(Snapshot("other-epoch", 9, {"b": 2})))
    assert (sync.epoch, sync.seq, sync.state) == ("other-epoch", 9, {"b": 2})
    assert sync.events_received() == [StateReplaced("other-epoch", 9, {"b": 2})]


def test_duplicate_diffs_are_ignored_and_a_gap_sends_one_resync() -> None:
    """A DIFF at or below seq is ignored; a gap sends one RESYNC and later gapped DIFFs wait."""
    sync = joined({"n": 0}, 0)
    sync.receive_frame(codec.encode(Diff(1, [[0, ["n"], 1]])))
    sync.receive_frame(codec.encode(Diff(1, [[0, ["n"], 99]])))
    assert sync.state == {"n": 1}
    sync.receive_frame(codec.encode(Diff(3, [[0, ["n"], 3]])))
    assert sync.state_kind is SyncState.RESYNCING
    assert sent(sync) == [Resync(EPOCH, 1)]
    sync.receive_frame(codec.encode(Diff(4, [[0, ["n"], 4]])))
    assert sent(sync) == []
    sync.receive_frame(codec.encode(Diff(2, [[0, ["n"], 2]])))
    assert sync.live and sync.state == {"n": 2}


def test_acks_errors_and_notices_become_events() -> None:
    """ACK, ERROR with an aid, and ERROR without one each become their event."""
    sync = joined()
    a1 = sync.act("patch", [])
    a2 = sync.act("patch", [[1, ["x"]]])
    assert sent(sync) == [Action(a1, "patch", []), Action(a2, "patch", [[1, ["x"]]])]
    assert sync.pending == [1, 2]
    frame = codec.encode_many(
        [Ack(a1, 0), Error(a2, "invalid", "no key"), Error(None, "rate_limited", "slow down")]
    )
    assert replay_frames([frame], sync) == [
        ActionAcked(1, 0),
        ActionRejected(2, "invalid", "no key"),
        ServerNotice("rate_limited", "slow down"),
    ]
    assert sync.pending == []


def test_spectators_and_unwelcomed_clients_cannot_act() -> None:
    """act() is refused for a spectator, and before the first WELCOME (aids follow 'acked')."""
    with pytest.raises(OutOfOrder):
        ClientSync("spectator").act("patch", [])
    fresh = ClientSync("agent")
    fresh.connect()
    with pytest.raises(OutOfOrder):
        fresh.act("patch", [])


def test_aids_continue_from_welcome_acked() -> None:
    """After WELCOME with acked=N, the next aid is N + 1."""
    sync = ClientSync("agent", client="c1")
    sync.connect()
    sync.receive_frame(welcome(acked=41) + codec.encode(Snapshot(EPOCH, 0, {})))
    assert sync.act("patch", []) == 42


def test_actions_queued_while_disconnected_are_sent_after_welcome() -> None:
    """An act() while idle is held and sent right after the next WELCOME."""
    sync = joined()
    sync.connection_lost()
    aid = sync.act("patch", [])
    assert sync.data_to_send() == []
    sync.connect()
    assert sent(sync) == [
        Hello(1, "agent", client="c1", resume=(EPOCH, 0), answers=True, patch=True, view=True)
    ]
    sync.receive_frame(welcome("current"))
    assert sent(sync) == [Action(aid, "patch", [])]


def test_close_is_final() -> None:
    """close() drops queued output and a later connection_lost does not reopen the machine."""
    sync = joined()
    sync.act("patch", [])
    sync.close()
    assert sync.data_to_send() == []
    sync.connection_lost()
    assert sync.state_kind is SyncState.CLOSED
    assert not sync.live


def test_unknown_server_message_types_are_ignored() -> None:
    """A message type this client does not know is skipped."""
    sync = joined()
    sync.receive_frame(msgpack.packb([42, "future"]))
    assert sync.events_received() == []


# --- properties -------------------------------------------------------------------------------


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[list[list[Any]]]]:
    """states[0..n] and diffs[1..n] (diffs[0] unused) of a room that applied valid ops."""
    doc, raw = draw(doc_and_ops(max_ops=20))
    states = [doc]
    diffs: list[list[list[Any]]] = [[]]
    current = doc
    for op in raw:
        try:
            nxt = ref_apply(current, op)
        except RefError:
            continue
        states.append(nxt)
        diffs.append([op])
        current = nxt
    return states, diffs


script_steps = st.one_of(
    st.just(("next", 0)),
    st.tuples(st.just("dup"), st.integers(0, 5)),
    st.tuples(st.just("gap"), st.integers(1, 3)),
    st.tuples(st.just("answer"), st.integers(0, 1)),
)


@settings(max_examples=200)
@given(histories(), st.lists(script_steps, max_size=40), st.booleans())
def test_diff_stream_with_duplicates_and_gaps_converges(
    history: tuple[list[dict[str, Any]], list[list[list[Any]]]],
    script: list[tuple[str, int]],
    final_by_snapshot: bool,
) -> None:
    """Fed DIFFs with duplicates and gaps, the client sends one RESYNC per gap and converges."""
    states, diffs = history
    last = len(states) - 1
    sync = joined(copy.deepcopy(states[0]), 0)
    delivered = 0  # the highest seq the "server" has sent
    resyncs: list[Resync] = []
    expected_resyncs = 0
    outstanding: Resync | None = None

    def diff_frame(seq: int) -> bytes:
        return codec.encode(Diff(seq, copy.deepcopy(diffs[seq])))

    def answer(by_snapshot: bool) -> None:
        nonlocal outstanding
        assert outstanding is not None
        if by_snapshot:
            sync.receive_frame(
                codec.encode(Snapshot(EPOCH, delivered, copy.deepcopy(states[delivered])))
            )
        else:
            frames = [diff_frame(s) for s in range(outstanding.seq + 1, delivered + 1)]
            if frames:
                sync.receive_frame(b"".join(frames))
        outstanding = None

    for step, arg in script:
        if step == "next" and delivered < last:
            delivered += 1
            sync.receive_frame(diff_frame(delivered))
        elif step == "dup" and sync.seq >= 1:
            sync.receive_frame(diff_frame(max(1, sync.seq - arg)))
        elif step == "gap" and delivered + 1 + arg <= last:
            delivered += 1 + arg
            if outstanding is None:
                expected_resyncs += 1
            sync.receive_frame(diff_frame(delivered))
        elif step == "answer" and outstanding is not None:
            answer(bool(arg))
        for message in sent(sync):
            assert isinstance(message, Resync)
            assert outstanding is None, "a second RESYNC while one is outstanding"
            assert message == Resync(EPOCH, sync.seq)
            resyncs.append(message)
            outstanding = message
        if outstanding is None:
            assert sync.live and sync.seq == delivered
        assert same(sync.state, states[sync.seq])
    if outstanding is not None:
        answer(final_by_snapshot)
    assert len(resyncs) == expected_resyncs
    assert sync.live and sync.seq == delivered
    assert same(sync.state, states[delivered])
    # Changed events between snapshots carry consecutive seqs.
    seq = 0
    for event in sync.events_received():
        if isinstance(event, StateReplaced):
            seq = event.seq
        elif isinstance(event, Changed):
            assert event.seq == seq + 1
            seq = event.seq
    assert seq == delivered


@settings(max_examples=200)
@given(
    st.integers(1, 8),
    st.data(),
)
def test_reconnect_resends_exactly_the_actions_from_acked(n: int, data: st.DataObject) -> None:
    """After a reconnect, pending actions with aid < acked resolve as seq=None with their
    answer lost; the one at acked (whose answer the room keeps, §5.8) and the rest resend."""
    sync = joined()
    aids = [sync.act("patch", [[0, ["k"], i]]) for i in range(n)]
    assert aids == list(range(1, n + 1))
    sync.data_to_send()
    # Some outcomes arrive before the connection drops.
    resolved = data.draw(st.sets(st.sampled_from(aids)), label="resolved before the drop")
    for aid in sorted(resolved):
        sync.receive_frame(codec.encode(Ack(aid, None)))
    sync.events_received()
    sync.connection_lost()
    acked = data.draw(st.integers(max(resolved, default=0), n), label="WELCOME acked")
    sync.connect()
    assert sent(sync) == [
        Hello(1, "agent", client="c1", resume=(EPOCH, 0), answers=True, patch=True, view=True)
    ]
    sync.receive_frame(welcome("current", acked=acked))
    pending = [a for a in aids if a not in resolved]
    resent = sent(sync)
    assert resent == [Action(a, "patch", [[0, ["k"], a - 1]]) for a in pending if a >= acked]
    events = sync.events_received()
    assert isinstance(events[0], Welcomed)
    lost = [ActionAcked(a, None, answer_known=False) for a in pending if a < acked]
    assert events[1:] == lost
    assert sync.pending == [a for a in pending if a >= acked]
    assert sync.act("patch", []) == n + 1


def _server_messages() -> st.SearchStrategy[list[Any]]:
    welcome_body = st.fixed_dictionaries(
        {
            "epoch": st.sampled_from([EPOCH, "other-epoch"]),
            "seq": st.integers(0, 3),
            "role": st.sampled_from(["agent", "spectator"]),
            "client": st.none() | st.just("c1"),
            "acked": st.integers(0, 3),
            "sync": st.sampled_from(["snapshot", "replay", "current"]),
        }
    )
    op = st.lists(wild_values, max_size=3) | st.builds(
        lambda k, p, v: [k, p, v],
        st.integers(0, 3),
        st.lists(st.sampled_from(["a", "b"]) | st.integers(-1, 2), max_size=3),
        wild_values,
    )
    return st.one_of(
        st.builds(lambda b: [2, b], welcome_body),
        st.builds(
            lambda e, s, state: [3, e, s, state],
            st.sampled_from([EPOCH, "other-epoch"]),
            st.integers(0, 5),
            st.dictionaries(st.sampled_from(["a", "b"]), wild_values, max_size=2),
        ),
        st.builds(lambda s, o: [5, s, o], st.integers(0, 6), st.lists(op, max_size=3)),
        st.builds(lambda a, s: [7, a, s], st.integers(0, 5), st.none() | st.integers(0, 5)),
        st.builds(lambda a: [8, a, "invalid", "m"], st.none() | st.integers(0, 5)),
        st.builds(lambda x: [99, x], wild_values),
    )


@settings(max_examples=300)
@given(st.data(), st.booleans())
def test_any_server_message_sequence_raises_only_malformed(
    data: st.DataObject, agent: bool
) -> None:
    """Whatever a server sends, in any order, the machine raises MalformedMessage or goes on."""
    sync = ClientSync("agent" if agent else "spectator", client="c1")
    sync.connect()
    for message in data.draw(st.lists(_server_messages(), max_size=8)):
        try:
            sync.receive_frame(msgpack.packb(message, use_bin_type=True))
        except MalformedMessage:
            return
        if agent and sync.welcomed:
            sync.act("patch", [])
        for frame in sync.data_to_send():
            codec.decode_client_frame(frame)  # whatever it sends is well-formed
        sync.events_received()

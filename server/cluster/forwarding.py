"""Actions on a node that does not own the room: forwarded to the owner through Redis.

The exactly-once record is one last aid per client, which is only right if a client's
actions reach the room's writer in aid order. So forwarding keeps one **lane** per
(room, client) on this node, and a lane is strictly ordered:

* its actions are sent as **units**: one message ``[node, client, [[request id, aid,
  name, args], ...]]`` on the room's inbox channel holding every unanswered action of
  the lane, in the order they were submitted; the owner submits a unit's actions to
  its writer in that order;
* **one unit in flight** per lane: the next unit goes only once every action of the
  last one is answered (what arrives meanwhile waits and goes in the next unit, so
  pipelining agents still get batches), so a later action never overtakes an earlier
  one, whatever the owner does;
* an action the owner did not run, because it does not own the room (any more) or could
  not write it (the store unreachable: ``unavailable`` to a client of its own), is
  answered ``retry`` and stays at the front of the lane for the next unit, sent again
  after RETRY_DELAY for up to ``retry_for``; the lane never tells its client "not
  processed" for an action it may have sent twice, since another copy may still run; an
  answer
  that does not come (the owner died) sends the whole unanswered unit again, when a
  new owner announces itself and every ``answer_timeout`` until then. Sending an
  action twice is safe because the copies are in order: the owner remembers each
  client's last processed aid, so a copy it already processed is answered ACK nil;
* when this node takes the room over, every lane's actions go to its own writer, in
  order, before anything newer can reach it.

PUBLISH says how many subscribers got a unit: none means no node owns the room right
now, so this node tries to take the lease itself and, failing that, tries again until
about two lease TTLs have passed; then the unit's actions are answered ``unavailable``
(never processed). The owner answers ``[[request id, epoch, seq, code, message], ...]``
on this node's own channel after the batch's diffs, and the answer reaches the agent
only once this node's feed has published the diff it names (DIFF before ACK on every
connection). After ANSWER_TRIES sends without an answer the outcome counts as unknown:
the lane gives up, a WebSocket agent is closed with 1011 and learns what was processed
from WELCOME's ``acked`` when it resumes; an HTTP agent gets 504 ``timeout`` and reads
``GET /rooms/{room}/clients/{client}``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack
import structlog

from statecast.protocol.errors import Rejection
from statecast.server.fanout import Subscriber, close_or_abort
from statecast.server.store.base import StoreUnavailable
from statecast.server.store.redis import RedisStore, inbox_channel, node_channel
from statecast.server.writer import (
    UNAVAILABLE,
    Outcome,
    RemoteReply,
    Request,
    encode_outcome,
)

if TYPE_CHECKING:
    from statecast.server.live import LiveRoom

log = structlog.get_logger()

ANSWER_TRIES = 5
#: How long a lane waits before sending again actions an owner answered ``retry``.
RETRY_DELAY = 0.1
#: The answer code of a node that did not run an action because it does not own the room:
#: the forwarding node sends it again (it never reaches a client).
RETRY = "retry"


class OutcomeUnknown(Exception):
    """The owner took the action and did not answer: it may or may not have been processed."""


def encode_unit(node: str, client: str, unit: list[tuple[int, Request]]) -> bytes:
    rows = [[request_id, req.aid, req.name, req.args] for request_id, req in unit]
    return bytes(msgpack.packb([node, client, rows], use_bin_type=True))


def decode_unit(data: bytes, received: float) -> list[Request]:
    """A unit's actions, in the lane's order, each answering to the node that sent it."""
    node, client, rows = msgpack.unpackb(data, raw=False, strict_map_key=False)
    node, client = str(node), str(client)
    return [
        Request(client, int(aid), str(name), args, RemoteReply(node, int(request_id)), received)
        for request_id, aid, name, args in rows
    ]


def encode_answers(epoch: str, outcomes: list[Outcome]) -> dict[str, bytes]:
    """One message per forwarding node: its answers in the order the owner processed them.

    ``unavailable`` (this copy was not processed: the store could not be written) goes back
    as ``retry``: a lane may have sent the same action more than once (a re-send, a PUBLISH
    retried after a timeout), and another copy may still be run, so the sending node must
    not tell its client "not processed"; it sends the action again, in order, until an
    owner processes it or its outcome counts as unknown."""
    by_node: dict[str, list[list[Any]]] = {}
    for req, seq, rejection in outcomes:
        assert isinstance(req.reply, RemoteReply)
        row = [req.reply.request, epoch, seq, None, None]
        if req.answer is not None:  # a sixth element only then: older nodes read five
            row.append(req.answer)
        if rejection is not None:
            code = RETRY if rejection.code == UNAVAILABLE.code else rejection.code
            row[3], row[4] = code, rejection.message
        by_node.setdefault(req.reply.node, []).append(row)
    return {
        node_channel(node): bytes(msgpack.packb(rows, use_bin_type=True))
        for node, rows in by_node.items()
    }


def retry_outcomes(requests: list[Request]) -> list[Outcome]:
    """Answers for forwarded actions this node did not run: the sender sends them again."""
    return [(req, None, Rejection(RETRY, "this node does not own the room")) for req in requests]


@dataclass(eq=False)
class _Lane:
    """One client's forwarded actions in one room, oldest first."""

    live: LiveRoom
    client: str
    #: Unanswered actions by request id, in submission order (sent or not).
    queue: dict[int, Request] = field(default_factory=dict)
    #: The request ids of the unit in flight, not yet answered.
    inflight: set[int] = field(default_factory=set)
    #: Request ids that may have reached an owner: never answered ``unavailable`` after
    #: that (the owner may have run them), only by an owner or as unknown.
    delivered: set[int] = field(default_factory=set)
    sends: int = 0
    timer: asyncio.TimerHandle | None = None
    task: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: Bumped when the lane is emptied from outside (taken over, given up): a send in
    #: flight then leaves the lane alone.
    generation: int = 0
    #: The last unit had actions answered ``retry``: wait RETRY_DELAY before the next.
    retried: bool = False
    #: Since when (event loop time) the lane's actions have only been answered ``retry``.
    retrying_since: float | None = None

    def stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class Forwarder:
    def __init__(
        self,
        store: RedisStore,
        lease_ttl: float,
        take_over: Callable[[LiveRoom], Awaitable[bool]],
        slow_timeout: float,
    ) -> None:
        self.store = store
        self.lease_ttl = lease_ttl
        self.take_over = take_over
        self.slow_timeout = slow_timeout
        #: How long to wait for an owner's answer before sending the unit again.
        self.answer_timeout = max(1.0, 1.5 * lease_ttl)
        #: How long a lane goes on sending actions only ever answered ``retry`` (no owner can
        #: run them: the store is unreachable, or ownership is moving) before their outcome
        #: counts as unknown.
        self.retry_for = 2 * lease_ttl + self.answer_timeout
        self._ids = itertools.count(1)
        self._lanes: dict[tuple[str, str], _Lane] = {}
        self._where: dict[int, _Lane] = {}

    def forward(self, live: LiveRoom, req: Request) -> None:
        key = (live.name, req.client)
        lane = self._lanes.get(key)
        if lane is None or lane.live is not live:
            if lane is not None:  # the room was reloaded: the old lane's actions are lost
                self._give_up_lane(lane)
            lane = self._lanes[key] = _Lane(live, req.client)
        request_id = next(self._ids)
        lane.queue[request_id] = req
        self._where[request_id] = lane
        if lane.task is None or lane.task.done():
            lane.task = live.feed.spawn(self._run(lane))
        elif not lane.inflight:
            lane.wake.set()

    def reforward(self, live: LiveRoom) -> None:
        """A new owner announced itself: send it every unit still waiting for an answer."""
        for lane in self._lanes_of(live):
            if lane.inflight:
                self._resend(lane)

    def _lanes_of(self, live: LiveRoom) -> list[_Lane]:
        return [lane for lane in self._lanes.values() if lane.live is live]

    def _resend(self, lane: _Lane) -> None:
        lane.stop_timer()
        lane.inflight.clear()
        lane.wake.set()

    async def _run(self, lane: _Lane) -> None:
        """The lane's only sender: one unit at a time, the oldest action first."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while lane.queue:
            if lane.inflight:
                lane.wake.clear()
                await lane.wake.wait()
                continue
            if lane.retried:  # the owner could not run them (yet): again, shortly
                lane.retried = False
                now = loop.time()
                if lane.retrying_since is None:
                    lane.retrying_since = now
                elif now - lane.retrying_since > self.retry_for:
                    self._give_up_lane(lane)  # outcome unknown: the agent resumes
                    return
                lane.sends = 0  # sends counts unanswered units only
                await asyncio.sleep(RETRY_DELAY)
                continue
            generation = lane.generation
            unit = list(lane.queue.items())
            data = encode_unit(self.store.node_id, lane.client, unit)
            try:
                received = await self.store.publish(inbox_channel(lane.live.name), data)
            except StoreUnavailable as exc:
                if lane.generation != generation:
                    continue
                if exc.sent:  # it may have reached the owner: wait for answers, as sent
                    self._sent(lane, [(i, r) for i, r in unit if i in lane.queue])
                    continue
                self._unavailable(lane, unit)
                if lane.queue and not lane.inflight:
                    await asyncio.sleep(0.05)
                continue
            if lane.generation != generation:
                continue  # taken over meanwhile: those actions went to this node's writer
            if received > 0:
                deadline = None
                self._sent(lane, [(i, r) for i, r in unit if i in lane.queue])
                continue
            # No owner right now: take the room over if its lease is free (the lanes'
            # actions then go to this node's writer, in order: see resubmit()).
            if await self.take_over(lane.live):
                deadline = None
                continue
            if deadline is None:
                deadline = loop.time() + 2 * self.lease_ttl
            elif loop.time() > deadline:
                deadline = None
                self._unavailable(lane, unit)
                if lane.queue and not lane.inflight:
                    lane.sends += 1  # delivered ones wait: one more try without an answer
                    if lane.sends >= ANSWER_TRIES:
                        self._give_up_lane(lane)
                        return
                continue
            await asyncio.sleep(0.05)
        if self._lanes.get((lane.live.name, lane.client)) is lane:
            del self._lanes[(lane.live.name, lane.client)]

    def _unavailable(self, lane: _Lane, unit: list[tuple[int, Request]]) -> None:
        """No owner took the unit: its actions that never reached one are answered
        ``unavailable`` (not processed); those that may have stay in the lane."""
        for request_id, _ in unit:
            if request_id not in lane.delivered:
                self._settle(request_id, None, None, UNAVAILABLE)

    def _sent(self, lane: _Lane, unit: list[tuple[int, Request]]) -> None:
        if not unit:
            return
        lane.inflight = {request_id for request_id, _ in unit}
        lane.delivered |= lane.inflight
        lane.sends += 1
        lane.stop_timer()
        lane.timer = asyncio.get_running_loop().call_later(
            self.answer_timeout, self._timed_out, lane
        )

    def on_answers(self, data: bytes) -> None:
        for row in msgpack.unpackb(data, raw=False):
            request_id, epoch, seq, code, message = row[:5]
            answer = row[5] if len(row) > 5 else None  # a node without answers sends five
            request_id = int(request_id)
            if code == RETRY:
                self._retry(request_id)
                continue
            rejection = Rejection(code, message) if code is not None else None
            self._settle(request_id, epoch, seq, rejection, answer)

    def _retry(self, request_id: int) -> None:
        lane = self._where.get(request_id)
        if lane is None or request_id not in lane.inflight:
            return
        lane.inflight.discard(request_id)  # it stays queued: the next unit carries it
        lane.retried = True
        if not lane.inflight:
            lane.stop_timer()
            lane.wake.set()

    def _settle(
        self,
        request_id: int,
        epoch: str | None,
        seq: int | None,
        rejection: Rejection | None,
        answer: bytes | None = None,
    ) -> None:
        lane = self._where.pop(request_id, None)
        if lane is None:
            return
        req = lane.queue.pop(request_id)
        req.answer = answer
        lane.delivered.discard(request_id)
        if request_id in lane.inflight:
            lane.inflight.discard(request_id)
            if not lane.inflight:
                lane.stop_timer()
                lane.sends = 0
                lane.retrying_since = None
                lane.wake.set()
        live = lane.live

        def deliver() -> None:
            _deliver(req, seq, rejection)
            live.feed.metrics.fanout_latency.observe(time.perf_counter() - req.received)

        follower = live.follower
        if follower is None or epoch is None or rejection is not None:
            if follower is not None:
                follower.answer("", None, deliver)  # in order behind answers that wait
            else:
                deliver()
            return
        follower.answer(epoch, seq, deliver)

    def _timed_out(self, lane: _Lane) -> None:
        lane.timer = None
        if not lane.inflight:
            return
        if lane.sends < ANSWER_TRIES:
            self._resend(lane)
            return
        self._give_up_lane(lane)

    def _close_lane(self, lane: _Lane) -> list[Request]:
        """Take every action out of the lane, in order, and forget the lane (a send in
        flight then leaves it alone: the generation moved)."""
        lane.stop_timer()
        lane.generation += 1
        requests = list(lane.queue.items())
        lane.queue.clear()
        lane.inflight.clear()
        lane.wake.set()
        if self._lanes.get((lane.live.name, lane.client)) is lane:
            del self._lanes[(lane.live.name, lane.client)]
        for request_id, _ in requests:
            self._where.pop(request_id, None)
        return [req for _, req in requests]

    def _give_up_lane(self, lane: _Lane) -> None:
        """No answer after ANSWER_TRIES sends: every action of the lane has an unknown
        outcome (the later ones must not overtake it), so the agent resumes from acked."""
        requests = self._close_lane(lane)
        for req in requests:
            log.warning(
                "forwarded action not answered", room=lane.live.name, client=req.client, aid=req.aid
            )
        unknown_outcome(requests, self.slow_timeout)

    def resubmit(self, live: LiveRoom) -> None:
        """This node now owns the room: every lane's actions run here, in order.

        Called as the writer is installed, before anything newer can reach it. One the
        old owner did process was logged with its aid, so it is answered as a duplicate
        (ACK nil) rather than applied twice; the copies are in order, so none overtakes.
        """
        assert live.writer is not None
        for lane in self._lanes_of(live):
            for req in self._close_lane(lane):
                live.writer.submit(req)

    def fail_all(self, live: LiveRoom) -> None:
        """The room is closing here: its waiting forwarded actions are left unknown."""
        for lane in self._lanes_of(live):
            self._give_up_lane(lane)


_closing: set[asyncio.Task[None]] = set()


def unknown_outcome(requests: list[Request], slow_timeout: float = 5.0) -> None:
    """Actions this node cannot know the outcome of (never answered ``unavailable``: they may
    have been processed). An agent's connection closes with 1011, so it resumes and learns
    what was processed from WELCOME's ``acked``; an HTTP caller gets 504 ``timeout``."""
    closed: set[Subscriber] = set()
    for req in requests:
        if isinstance(req.reply, Subscriber):
            if req.reply not in closed:
                closed.add(req.reply)
                task = asyncio.ensure_future(
                    close_or_abort(req.reply.conn, 1011, "action outcome unknown", slow_timeout)
                )
                _closing.add(task)
                task.add_done_callback(_closing.discard)
        elif isinstance(req.reply, asyncio.Future) and not req.reply.done():
            req.reply.set_exception(OutcomeUnknown("the room's owner did not answer"))


def _deliver(req: Request, seq: int | None, rejection: Rejection | None) -> None:
    if isinstance(req.reply, Subscriber):
        sub = req.reply
        message = encode_outcome(req, seq, rejection)
        if sub.lagging:
            sub.held.append(message)
        else:
            sub.send(message)
    elif isinstance(req.reply, asyncio.Future) and not req.reply.done():
        if rejection is not None:
            req.reply.set_exception(rejection)
        else:
            req.reply.set_result(seq)

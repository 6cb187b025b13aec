"""Actions on a node that does not own the room: forwarded to the owner through Redis.

The forwarding node publishes ``[node, request id, client, aid, name, args]`` on
the room's inbox channel, which only the owner subscribes to. PUBLISH says how
many subscribers got it: none means no node owns the room right now, so this
node tries to take the lease itself and, failing that, tries again until about
two lease TTLs have passed; then the action is answered ``unavailable`` (it was
never processed). The owner runs it like any other action and publishes
``[[request id, epoch, seq, code, message], ...]`` on the forwarding node's own
channel after the batch's diffs, and the answer reaches the agent only once this
node's feed has published the diff it names (DIFF before ACK on every connection).

An answer that does not come (the owner died after taking the action) is asked
for again: the action is sent once more when a new owner announces itself, and
every lease TTL until then. Sending it twice is safe: the owner remembers each
client's last processed aid, so one it already processed is answered ACK nil.
After ANSWER_TRIES the outcome counts as unknown: a WebSocket agent is closed with
1011 and learns what was processed from WELCOME's ``acked`` when it resumes; an
HTTP agent gets 504 ``timeout`` and reads ``GET /rooms/{room}/clients/{client}``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgpack
import structlog

from statecast.protocol import codec
from statecast.protocol.errors import Rejection
from statecast.protocol.messages import Ack, Error
from statecast.server.fanout import Subscriber, close_or_abort
from statecast.server.store.base import StoreUnavailable
from statecast.server.store.redis import RedisStore, inbox_channel, node_channel
from statecast.server.writer import UNAVAILABLE, Outcome, RemoteReply, Request

if TYPE_CHECKING:
    from statecast.server.live import LiveRoom

log = structlog.get_logger()

ANSWER_TRIES = 5


class OutcomeUnknown(Exception):
    """The owner took the action and did not answer: it may or may not have been processed."""


def encode_action(node: str, request_id: int, req: Request) -> bytes:
    return bytes(
        msgpack.packb(
            [node, request_id, req.client, req.aid, req.name, req.args], use_bin_type=True
        )
    )


def decode_action(data: bytes) -> tuple[str, int, str, int, str, Any]:
    node, request_id, client, aid, name, args = msgpack.unpackb(
        data, raw=False, strict_map_key=False
    )
    return str(node), int(request_id), str(client), int(aid), str(name), args


def encode_answers(epoch: str, outcomes: list[Outcome]) -> dict[str, bytes]:
    """One message per forwarding node: its answers in the order the owner processed them."""
    by_node: dict[str, list[list[Any]]] = {}
    for req, seq, rejection in outcomes:
        assert isinstance(req.reply, RemoteReply)
        row = [req.reply.request, epoch, seq, None, None]
        if rejection is not None:
            row[3], row[4] = rejection.code, rejection.message
        by_node.setdefault(req.reply.node, []).append(row)
    return {
        node_channel(node): bytes(msgpack.packb(rows, use_bin_type=True))
        for node, rows in by_node.items()
    }


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
        #: How long to wait for an owner's answer before sending the action again.
        self.answer_timeout = max(1.0, 1.5 * lease_ttl)
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[LiveRoom, Request, asyncio.TimerHandle | None]] = {}
        self._tries: dict[int, int] = {}

    def forward(self, live: LiveRoom, req: Request) -> None:
        request_id = next(self._ids)
        self._pending[request_id] = (live, req, None)
        self._tries[request_id] = 1
        live.feed.spawn(self._send(live, req, request_id))

    def reforward(self, live: LiveRoom) -> None:
        """A new owner announced itself: send it every action still waiting for an answer."""
        for request_id, (other, req, timer) in list(self._pending.items()):
            if other is live and timer is not None:
                timer.cancel()
                self._pending[request_id] = (live, req, None)
                live.feed.spawn(self._send(live, req, request_id))

    async def _send(self, live: LiveRoom, req: Request, request_id: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2 * self.lease_ttl
        data = encode_action(self.store.node_id, request_id, req)
        while True:
            try:
                received = await self.store.publish(inbox_channel(live.name), data)
            except StoreUnavailable:
                self._settle(request_id, None, None, UNAVAILABLE)
                return
            if request_id not in self._pending:
                return  # answered already (an owner's answer can beat PUBLISH's reply)
            if received > 0:
                timer = loop.call_later(self.answer_timeout, self._timed_out, request_id)
                self._pending[request_id] = (live, req, timer)
                return
            # No owner right now: take the room over if its lease is free.
            if await self.take_over(live) and live.writer is not None:
                self._pending.pop(request_id, None)
                live.writer.submit(req)
                return
            if loop.time() > deadline:
                self._settle(request_id, None, None, UNAVAILABLE)
                return
            await asyncio.sleep(0.05)

    def on_answers(self, data: bytes) -> None:
        for request_id, epoch, seq, code, message in msgpack.unpackb(data, raw=False):
            rejection = Rejection(code, message) if code is not None else None
            self._settle(int(request_id), epoch, seq, rejection)

    def _settle(
        self, request_id: int, epoch: str | None, seq: int | None, rejection: Rejection | None
    ) -> None:
        entry = self._pending.pop(request_id, None)
        self._tries.pop(request_id, None)
        if entry is None:
            return
        live, req, timer = entry
        if timer is not None:
            timer.cancel()

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

    def _timed_out(self, request_id: int) -> None:
        entry = self._pending.get(request_id)
        if entry is None:
            return
        live, req, _ = entry
        tries = self._tries.get(request_id, ANSWER_TRIES)
        if tries < ANSWER_TRIES:
            self._tries[request_id] = tries + 1
            self._pending[request_id] = (live, req, None)
            live.feed.spawn(self._send(live, req, request_id))
            return
        self._give_up(request_id)

    def _give_up(self, request_id: int) -> None:
        self._tries.pop(request_id, None)
        entry = self._pending.pop(request_id, None)
        if entry is None:
            return
        live, req, _ = entry
        log.warning("forwarded action not answered", room=live.name, client=req.client, aid=req.aid)
        if isinstance(req.reply, Subscriber):
            sub = req.reply
            live.feed.spawn(
                close_or_abort(sub.conn, 1011, "action outcome unknown", self.slow_timeout)
            )
        elif isinstance(req.reply, asyncio.Future) and not req.reply.done():
            req.reply.set_exception(OutcomeUnknown("the room's owner did not answer"))

    def resubmit(self, live: LiveRoom) -> None:
        """This node now owns the room: actions still waiting for the old owner run here.

        One the old owner did process was logged with its aid, so it is answered as a
        duplicate (ACK nil) rather than applied twice.
        """
        assert live.writer is not None
        for request_id, (other, req, timer) in list(self._pending.items()):
            if other is live and timer is not None:
                timer.cancel()
                del self._pending[request_id]
                self._tries.pop(request_id, None)
                live.writer.submit(req)

    def fail_all(self, live: LiveRoom) -> None:
        """The room is closing here: its waiting forwarded actions are left unknown."""
        for request_id, (other, _, _) in list(self._pending.items()):
            if other is live:
                self._give_up(request_id)


def _deliver(req: Request, seq: int | None, rejection: Rejection | None) -> None:
    if isinstance(req.reply, Subscriber):
        message: Ack | Error = (
            Error(req.aid, rejection.code, rejection.message)
            if rejection is not None
            else Ack(req.aid, seq)
        )
        sub = req.reply
        if sub.lagging:
            sub.held.append(codec.encode(message))
        else:
            sub.send(codec.encode(message))
    elif isinstance(req.reply, asyncio.Future) and not req.reply.done():
        if rejection is not None:
            req.reply.set_exception(rejection)
        else:
            req.reply.set_result(seq)

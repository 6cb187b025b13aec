"""A room's writer: the one place its actions run, on the process that owns the room.

Actions from every connection (and from HTTP) go into one inbox per room. A
single worker task takes everything queued as one batch and:

1. runs each action through the room (all or nothing per action), numbering
   each diff ``seq = previous + 1`` and recording each client's last aid;
2. hands the batch to the store (``--durability ack``: and waits for it);
3. publishes it through the room's feed (server/feed.py): the diffs go to
   every member in one frame each, and each acting agent's ACK/ERROR rides
   after the diffs in its own frame, so an agent always sees its DIFF before
   its ACK.

So when actions arrive faster than one pass completes, the next pass carries
all of them: one write per subscriber per pass, not per diff, and no added
delay when the room is idle.

Presence hooks (``on_join`` / ``on_leave``) queue in the same inbox and run in
the same pass, in order with actions: their ops become ordinary diffs, stored
and published like an action's, with no client aid recorded.

A batch whose write does not happen is rolled back (every applied op keeps an
undo entry), so the state goes back to the published head and readers never
see what the store does not hold. Then, by what the store said:

* unreachable (:class:`StoreUnavailable`): when the write certainly never reached
  the store, the batch's actions are answered ``unavailable``; when it may have,
  the writer retries the same write (a retry of one that had landed is
  recognised, not doubled), answers new actions ``unavailable`` meanwhile, and
  once it lands re-applies the batch and publishes it as usual;
* refused (:class:`Fenced`: another process owns the room now): the writer stops
  at once and hands its unanswered actions to ``hooks.refused``;
* the room's keys are gone (:class:`RoomLost`): ``hooks.keys_lost`` writes the
  state back under a new epoch, and the batch runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack
import structlog

from statecast.protocol import codec, ops
from statecast.protocol.errors import Rejection
from statecast.protocol.messages import Error
from statecast.server.config import Config
from statecast.server.fanout import Subscriber
from statecast.server.feed import RoomFailed, RoomFeed
from statecast.server.history import MIN_HISTORY_BYTES
from statecast.server.metrics import Metrics
from statecast.server.presence import Hook
from statecast.server.quotas import StoreBounds
from statecast.server.room import Room
from statecast.server.state_view import StateMutation
from statecast.server.store.base import (
    Fenced,
    RoomLost,
    Store,
    StoredChange,
    StoreUnavailable,
)

log = structlog.get_logger()

MAX_UNWRITTEN = 10_000
RETRY_INTERVAL = 0.25


@dataclass(frozen=True, slots=True)
class RemoteReply:
    """An action forwarded by another node: the answer goes back to that node."""

    node: str
    request: int


@dataclass(slots=True)
class Request:
    """An action waiting in a room's inbox."""

    client: str
    aid: int
    name: str
    args: Any
    reply: Subscriber | asyncio.Future[int | None] | RemoteReply
    received: float
    #: The handler's answer, encoded, once processed (docs/protocol.md §5.8): set when the
    #: action ran and answered, or when it is the client's last aid re-sent.
    answer: bytes | None = None


@dataclass(slots=True)
class HookRequest:
    """A presence hook waiting in a room's inbox."""

    client: str
    hook: Hook


Outcome = tuple[Request, int | None, Rejection | None]
UNAVAILABLE = Rejection("unavailable", "the room's store cannot be reached: send it again later")


def encode_outcome(req: Request, seq: int | None, rejection: Rejection | None) -> bytes:
    """The ACK or ERROR for an action answered to a connection; the ACK carries the
    handler's answer when the connection asked for answers in its HELLO (§5.8)."""
    if rejection is not None:
        return codec.encode(Error(req.aid, rejection.code, rejection.message))
    reply = req.reply
    answer = req.answer if isinstance(reply, Subscriber) and reply.answers else None
    return codec.encode_ack(req.aid, seq, answer)


class WriterHooks(Protocol):
    """What a cluster adds to a writer (server/cluster/); a lone server has none."""

    def answer_remote(self, writer: RoomWriter, outcomes: list[Outcome]) -> None:
        """Send forwarded actions' outcomes back to the nodes they came from."""

    def refused(self, writer: RoomWriter, requests: list[Request | HookRequest]) -> None:
        """Another node owns the room now: stop acting for it; ``requests`` are unanswered."""

    async def keys_lost(self, writer: RoomWriter) -> None:
        """The store lost the room: write the state at the head back as seq 0 of a new
        epoch (the feed's head is then 0)."""


@dataclass(slots=True)
class _Pending:
    """A batch applied and then rolled back because its write may not have happened."""

    changes: list[StoredChange]
    diffs: list[tuple[int, bytes]]
    outcomes: list[Outcome]
    size_delta: int
    touched: list[tuple[int, list[tuple[int, ops.Path]]]]


class RoomWriter:
    def __init__(
        self,
        feed: RoomFeed,
        room: Room,
        *,
        store: Store,
        config: Config,
        metrics: Metrics,
        hooks: WriterHooks | None = None,
        bounds: StoreBounds | None = None,
    ) -> None:
        self.feed = feed
        #: The store's bounds: while it is full, no state grows (server/quotas.py).
        self.bounds = bounds
        self.room = room
        room.set_limits(
            max_depth=config.max_depth,
            max_key_length=config.max_key_length or None,
            max_state_bytes=config.max_state_bytes or None,
        )
        self.store = store
        self.config = config
        self.metrics = metrics
        self.hooks = hooks
        self.lost_writes = False  # async durability: published diffs the store did not keep
        #: A batch waiting for an unreachable store; new actions are answered unavailable.
        self.suspended: _Pending | None = None
        #: Set when another process took the room over: this writer does nothing more.
        self.stopped = False
        self._applied = feed.head
        self._since_checkpoint = 0
        #: Changes appended since the last checkpoint (or since the load).
        self._unchecked = False
        self._inbox: list[Request | HookRequest] = []
        #: Client ids the room may record for exactly-once (0: no limit): --auth none only.
        self.max_clients = config.max_room_clients if config.auth == "none" else 0
        self._wake = asyncio.Event()
        #: The store lost the room (its owner found out between writes): write it back.
        self._write_back = False
        self._unwritten: list[StoredChange] = []
        self._write_chain: asyncio.Task[None] | None = None
        self._worker = asyncio.create_task(self._work(), name=f"room {feed.name}")

    @property
    def name(self) -> str:
        return self.feed.name

    def submit(self, request: Request) -> None:
        if self.feed.failed is not None:
            raise RoomFailed(str(self.feed.failed))
        if self._worker.done():  # closed (unloaded or shutting down): it would never answer
            raise RoomFailed("the room is not running")
        if self.suspended is not None:
            self.answer([(request, None, UNAVAILABLE)])
            return
        self._inbox.append(request)
        self._wake.set()

    def submit_hook(self, client: str, hook: Hook) -> None:
        if self.feed.failed is None:  # else the reloaded room seeds its presence afresh
            self._inbox.append(HookRequest(client, hook))
            self._wake.set()

    def may_record(self, client: str) -> bool:
        """Whether the room can remember ``client``'s aids (``--max-room-clients``)."""
        acked = self.feed.acked
        return not self.max_clients or client in acked or len(acked) < self.max_clients

    @property
    def idle(self) -> bool:
        """Nothing queued or being written."""
        chain = self._write_chain
        return (
            not self._inbox
            and not self.feed.busy
            and self.suspended is None
            and (chain is None or chain.done())
        )

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.feed.failed is not None:
                return
            if self.stopped:
                if self._inbox and self.hooks is not None:  # e.g. a batch re-queued after a
                    self.hooks.refused(self, self.stop())  # write-back: on to the new owner
                return
            if self._write_back and not await self._written_back():
                return
            if not self._inbox:
                continue
            batch, self._inbox = self._inbox, []
            self.feed.begin_batch()
            try:
                await self._process(batch)
            except Fenced as exc:
                self._refused(exc, batch)
                return
            except RoomLost:
                if self.hooks is None:
                    raise
                log.warning("the store lost the room: writing it back", room=self.name)
                self._inbox[:0] = batch  # rolled back: it runs again on the new epoch
                self.write_back_soon()
            except StoreUnavailable as exc:
                log.warning("store unreachable", room=self.name, error=str(exc))
            except Exception as exc:
                log.exception("room failed", room=self.name)
                self._fail(exc, batch)
                return
            finally:
                self.feed.end_batch()
            if self.suspended is not None and not await self._retry_suspended():
                return
            # Let joins and reads that waited for the publish run before the next batch.
            await asyncio.sleep(0)

    def write_back_soon(self) -> None:
        """The store lost the room's keys: write the room back before the next batch."""
        self._write_back = True
        self._wake.set()

    async def _written_back(self) -> bool:
        """Write the room back (hooks.keys_lost); False if the writer must end.

        Nothing can be written until the room is back, so this waits: while the store is
        unreachable, and while another node holds the lease for a moment without writing
        (a follower leaves the write-back to the owner, whose copy is the freshest), for up
        to a lease TTL; then another node owns the room and this writer hands on."""
        self._write_back = False
        if self.hooks is None:
            return True
        refusals = 0
        while True:
            if self.feed.failed is not None:
                return False
            if self.stopped:
                self.hooks.refused(self, self.stop())
                return False
            self.feed.begin_batch()
            try:
                await self._keys_lost()
                return True
            except (RoomLost, Fenced) as exc:
                refusals += 1
                if refusals * RETRY_INTERVAL >= self.config.lease_ttl:
                    self._refused(Fenced(str(exc)), [])
                    return False
            except StoreUnavailable:
                pass
            finally:
                self.feed.end_batch()
            await asyncio.sleep(RETRY_INTERVAL)

    async def _retry_suspended(self) -> bool:
        """Write the rolled-back batch until the store answers; False if the writer must end."""
        pending = self.suspended
        assert pending is not None
        unanswered: list[Request | HookRequest] = [req for req, _, _ in pending.outcomes]
        while True:
            await asyncio.sleep(RETRY_INTERVAL)
            if self.feed.failed is not None:
                return False
            if self.stopped:
                # Another process owns the room now. Whether or not the write landed, the
                # new owner's log says so: its exactly-once check answers them rightly.
                self.suspended = None
                if self.hooks is not None:
                    self.hooks.refused(self, unanswered + self.stop())
                return False
            self.feed.begin_batch()
            try:
                await self.store.append(self.name, pending.changes)
            except StoreUnavailable:
                continue
            except Fenced as exc:
                self.suspended = None
                self._refused(exc, unanswered)
                return False
            except RoomLost:
                if self.hooks is None:
                    raise
                self.suspended = None
                self._inbox[:0] = unanswered  # rolled back: they run again on the new epoch
                self.write_back_soon()
                return True
            else:
                self.suspended = None
                self._reapply(pending)
                self._index(pending.touched)
                await self._after_write(pending.diffs, pending.outcomes)
                log.info("store reachable again: the room goes on", room=self.name)
                return True
            finally:
                self.feed.end_batch()

    async def _keys_lost(self) -> None:
        """Write the room back; its seqs go on from the new epoch's seq 0."""
        assert self.hooks is not None
        await self.hooks.keys_lost(self)
        self._applied = self.feed.head
        self._since_checkpoint = 0

    def _reapply(self, pending: _Pending) -> None:
        """Redo a rolled-back batch whose write has now landed, from its own diffs."""
        for _, encoded in pending.diffs:
            _, _, diff_ops = msgpack.unpackb(encoded, raw=False)
            ops.apply_wire_ops(self.room.state, diff_ops, self.room.max_depth)
        for change in pending.changes:
            if change.client is not None:
                self.feed.acked[change.client] = change.aid
                if change.answer is not None:
                    self.feed.answers[change.client] = (change.aid, change.answer)
                else:
                    self.feed.answers.pop(change.client, None)
        self.room.state_bytes += pending.size_delta
        if pending.diffs:
            self._applied = pending.diffs[-1][0]

    async def _process(self, batch: list[Request | HookRequest]) -> None:
        acked, answers = self.feed.acked, self.feed.answers
        answers_before: dict[str, tuple[int, bytes] | None] = {}
        touched: list[tuple[int, list[tuple[int, ops.Path]]]] = []
        changes: list[StoredChange] = []
        outcomes: list[Outcome] = []
        diffs: list[tuple[int, bytes]] = []
        undo: list[ops.Undo] = []
        acked_before: dict[str, int] = {}
        applied_before, size_before = self._applied, self.room.state_bytes
        counts = {"applied": 0, "rejected": 0, "duplicate": 0}  # counted once per batch
        self.room.growth_refused = self.bounds.full if self.bounds is not None else None
        for req in batch:
            if type(req) is HookRequest:
                hooked = self._run_hook(req, undo)
                if hooked is not None:
                    hook_diff, hook_touched = hooked
                    diffs.append((self._applied, hook_diff))
                    touched.append((self._applied, hook_touched))
                    changes.append(StoredChange(self._applied, hook_diff, None, 0))
                continue
            assert type(req) is Request
            req.answer = None  # a request run again (handed on, re-queued) answers afresh
            last = acked.get(req.client, 0)
            if req.aid <= last:
                if req.aid == last:  # the last aid: its answer, if it had one, again
                    kept = answers.get(req.client)
                    if kept is not None and kept[0] == req.aid:
                        req.answer = kept[1]
                outcomes.append((req, None, None))
                counts["duplicate"] += 1
                continue
            if self.max_clients and not self.may_record(req.client):
                refusal = f"the room records at most {self.max_clients} client ids: reuse one"
                outcomes.append((req, None, Rejection("forbidden", refusal)))
                continue
            acked_before.setdefault(req.client, last)
            if req.client not in answers_before:
                answers_before[req.client] = answers.pop(req.client, None)
            else:
                answers.pop(req.client, None)
            acked[req.client] = req.aid
            try:
                ran = self.room.run_action(req.client, req.name, req.args, undo)
                parts, req.answer = ran.parts, ran.answer
            except Rejection as exc:
                rejection: Rejection | None = exc
            except StateMutation as exc:
                log.error(
                    "room handler changed the state in place: use ctx.set, ctx.delete or "
                    "ctx.insert",
                    room=self.name,
                    action=req.name,
                    error=str(exc),
                )
                rejection = Rejection(
                    "invalid",
                    f"action {req.name!r} failed in the room: its handler changed the state "
                    f"in place (handlers change it only through ctx.set, ctx.delete or "
                    f"ctx.insert); nothing was changed",
                )
            except Exception:
                log.exception("room handler raised", room=self.name, action=req.name)
                rejection = Rejection("invalid", f"action {req.name!r} failed in the room")
            else:
                rejection = None
            if rejection is not None:
                changes.append(StoredChange(self._applied, None, req.client, req.aid))
                outcomes.append((req, None, rejection))
                counts["rejected"] += 1
                continue
            encoded: bytes | None = None
            if parts:
                self._applied += 1
                encoded = codec.encode_diff_parts(self._applied, parts)
                diffs.append((self._applied, encoded))
                touched.append((self._applied, ran.touched))
            if req.answer is not None:
                answers[req.client] = (req.aid, req.answer)
            changes.append(StoredChange(self._applied, encoded, req.client, req.aid, req.answer))
            outcomes.append((req, self._applied, None))
            counts["applied"] += 1
        for outcome, count in counts.items():
            if count:
                self.metrics.actions.labels(outcome).inc(count)
        if changes:
            try:
                await self._persist(changes)
            except (StoreUnavailable, Fenced, RoomLost) as exc:
                # Not written (or not known to be): back to the published head.
                ops.rollback(undo)
                for client, aid in acked_before.items():
                    if aid:
                        acked[client] = aid
                    else:
                        acked.pop(client, None)
                for client, kept in answers_before.items():
                    if kept is not None:
                        answers[client] = kept
                    else:
                        answers.pop(client, None)
                size_delta = self.room.state_bytes - size_before
                self.room.state_bytes, self._applied = size_before, applied_before
                if isinstance(exc, StoreUnavailable):
                    if not exc.sent:  # certainly not written: answer now, nothing waits
                        self.answer([(req, None, UNAVAILABLE) for req, _, _ in outcomes])
                    else:
                        self.suspended = _Pending(changes, diffs, outcomes, size_delta, touched)
                raise
        self._index(touched)
        await self._after_write(diffs, outcomes)

    async def _after_write(self, diffs: list[tuple[int, bytes]], outcomes: list[Outcome]) -> None:
        self._publish(diffs, outcomes)
        if diffs:
            self._since_checkpoint += len(diffs)
            if self._since_checkpoint >= self.config.checkpoint_every:
                try:  # the worker: settled() would wait on itself
                    await self._write_checkpoint()
                except (StoreUnavailable, Fenced, RoomLost) as exc:
                    # The log still holds every diff: the next period tries again.
                    log.info("checkpoint skipped", room=self.name, error=str(exc))

    def _run_hook(
        self, req: HookRequest, undo: list[ops.Undo]
    ) -> tuple[bytes, list[tuple[int, ops.Path]]] | None:
        """The hook's DIFF and the entries it changed, if it changed anything. A hook that
        raises changes nothing and is logged: presence must not take the room down."""
        try:
            ran = self.room.run_hook(req.client, req.hook, undo)
        except Exception:
            log.exception("room hook raised", room=self.name, hook=req.hook, client=req.client)
            return None
        if not ran.parts:
            return None
        self._applied += 1
        return codec.encode_diff_parts(self._applied, ran.parts), ran.touched

    def _index(self, touched: list[tuple[int, list[tuple[int, ops.Path]]]]) -> None:
        """Record what each written diff changed in the net-change index (§5.11)."""
        index = self.feed.history.index
        for seq, changed in touched:
            for kind, path in changed:
                index.record(seq, kind, path)

    async def _persist(self, changes: list[StoredChange]) -> None:
        self._unchecked = True
        if self.config.durability == "ack" or not self.store.durable:
            t0 = time.perf_counter()
            await self.store.append(self.name, changes)
            self.metrics.commit_seconds.observe(time.perf_counter() - t0)
            return
        # async durability: publish now, write behind. One writer per room appends
        # everything published since its last append, so the store sees the batches
        # in seq order, one append in flight per room. A failed write fails the room
        # (clients saw diffs the store lost). Past MAX_UNWRITTEN changes the worker
        # waits for the writer to catch up.
        writer = self._write_chain
        if writer is not None and writer.done() and not writer.cancelled() and writer.exception():
            raise RoomFailed("an earlier write failed")  # appending now would leave a gap
        self._unwritten.extend(changes)
        if self._write_chain is None or self._write_chain.done():
            self._write_chain = asyncio.create_task(self._write_behind())
            self._write_chain.add_done_callback(self._written)
        if len(self._unwritten) > MAX_UNWRITTEN:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._write_chain)
            if self.feed.failed is not None:  # that write failed: this batch must not be answered
                raise RoomFailed(str(self.feed.failed))

    async def _write_behind(self) -> None:
        while self._unwritten:
            changes, self._unwritten = self._unwritten, []
            await self.store.append(self.name, changes)

    def _written(self, task: asyncio.Task[None]) -> None:
        exc = None if task.cancelled() else task.exception()
        if exc is None:
            return
        # Even when the room already failed (the next batch can find the failed write
        # before this callback runs): clients saw diffs the store lost, so a new epoch.
        self.lost_writes = True
        if self.feed.failed is None:
            log.error("store write failed after publish", room=self.name, error=repr(exc))
            self._fail(exc, [])

    def answer(self, outcomes: list[Outcome]) -> None:
        """Answer actions outside a publish (no diffs to order them after)."""
        extras: dict[Subscriber, list[bytes]] = {}
        remote = self._collect(outcomes, extras)
        for sub, messages in extras.items():
            sub.send(b"".join(messages))
        if remote and self.hooks is not None:
            self.hooks.answer_remote(self, remote)

    def _collect(
        self, outcomes: list[Outcome], extras: dict[Subscriber, list[bytes]]
    ) -> list[Outcome]:
        remote: list[Outcome] = []
        for req, seq, rejection in outcomes:
            if isinstance(req.reply, RemoteReply):
                remote.append((req, seq, rejection))
            elif isinstance(req.reply, Subscriber):
                extras.setdefault(req.reply, []).append(encode_outcome(req, seq, rejection))
            elif not req.reply.done():
                if rejection is not None:
                    req.reply.set_exception(rejection)
                else:
                    req.reply.set_result(seq)
        return remote

    def _publish(self, diffs: list[tuple[int, bytes]], outcomes: list[Outcome]) -> None:
        extras: dict[Subscriber, list[bytes]] = {}
        remote = self._collect(outcomes, extras)
        self.feed.publish(diffs, extras)
        if remote and self.hooks is not None:
            self.hooks.answer_remote(self, remote)
        if diffs and self.room.max_state_bytes is not None:  # state_bytes is kept up to date
            self.feed.history.trim_to(max(MIN_HISTORY_BYTES, self.room.state_bytes))
        now = time.perf_counter()
        for req, _, _ in outcomes:
            self.metrics.fanout_latency.observe(now - req.received)

    # --- lifecycle -----------------------------------------------------------------------

    async def drain(self) -> None:
        """Wait until every action submitted so far is processed and written."""
        while self._inbox or self.feed.busy:
            if self._worker.done():
                break
            self._wake.set()
            await asyncio.sleep(0.001)
        if self._write_chain is not None:
            with contextlib.suppress(Exception):  # a failed write has failed the room
                await self._write_chain

    async def checkpoint(self) -> None:
        await self.feed.settled()
        await self._write_checkpoint()

    async def _write_checkpoint(self) -> None:
        if self._write_chain is not None:
            await self._write_chain
        state = msgpack.packb(self.room.state, use_bin_type=True)
        self.room.state_bytes = len(state)  # the running estimate, made exact again
        await self.store.checkpoint(self.name, self.feed.head, state, dict(self.feed.acked))
        self._since_checkpoint = 0
        self._unchecked = False

    async def close(self) -> None:
        try:
            await self.drain()
            # A room that wrote nothing since it loaded (or last checkpointed) leaves the
            # store as it found it: unloading a room that was only read costs no write.
            if self.feed.failed is None and self._unchecked:
                await self.checkpoint()
        finally:  # a failed checkpoint must not leave the worker running
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    def stop(self) -> list[Request | HookRequest]:
        """Stop writing (the lease is lost or handed over); returns the unanswered requests.

        While a batch is in flight (being written, or waiting for an unreachable store)
        nothing is returned: the worker hands the queued requests on through
        ``hooks.refused`` once that batch's outcome is known, behind the batch's own if it
        was refused, so a client's actions reach the next owner in aid order.
        """
        self.stopped = True
        self._wake.set()
        if self._batch_in_flight:
            return []
        unanswered, self._inbox = self._inbox, []
        return unanswered

    @property
    def _batch_in_flight(self) -> bool:
        return self.feed.busy or self.suspended is not None

    @property
    def handing_on(self) -> bool:
        """Stopped, with requests still to hand on once the batch in flight is settled: a new
        request must queue behind them (:meth:`queue_behind`) to keep its client's order."""
        return (
            self.stopped
            and not self._worker.done()
            and (self._batch_in_flight or bool(self._inbox))
        )

    def queue_behind(self, request: Request) -> None:
        """Queue ``request`` behind what a stopped writer hands on (see :attr:`handing_on`)."""
        self._inbox.append(request)
        self._wake.set()

    def _refused(self, exc: Fenced, requests: list[Request | HookRequest]) -> None:
        """Another process owns the room: stop now, hand the unanswered requests over."""
        log.warning(
            "write refused: this process stops writing for the room",
            room=self.name,
            reason=str(exc),
        )
        self.stopped = True
        unanswered, self._inbox = requests + self._inbox, []
        if self.hooks is None:
            self._fail(exc, unanswered)
            return
        self.hooks.refused(self, unanswered)

    def _fail(self, exc: BaseException, batch: list[Request | HookRequest]) -> None:
        self.feed.fail(exc)
        self._wake.set()  # the worker, if it waits for work, sees the failure and ends
        for req in batch + self._inbox:
            if (
                isinstance(req, Request)
                and isinstance(req.reply, asyncio.Future)
                and not req.reply.done()
            ):
                req.reply.set_exception(RoomFailed(str(exc)))
        remote: list[Outcome] = [
            (req, None, UNAVAILABLE)
            for req in batch + self._inbox
            if isinstance(req, Request) and isinstance(req.reply, RemoteReply)
        ]
        if remote and self.hooks is not None:
            self.hooks.answer_remote(self, remote)
        self._inbox.clear()

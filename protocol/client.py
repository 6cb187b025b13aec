"""The asyncio client: a :class:`~statecast.protocol.sync.ClientSync` driven over websockets.

This is the only module in protocol/ that does I/O, and nothing else in
protocol/ imports it. It owns one background task per room that connects,
feeds frames to the sync machine, writes what the machine wants sent, and on a
retryable close (1001, 1011, 4008, 4029, or a dropped connection) reconnects
with jittered exponential backoff and resumes by ``(epoch, seq)``. Un-acked
actions are re-sent with their original aids, so each takes effect exactly once.

The backoff (:class:`~statecast.protocol.backoff.Backoff`, the JS client's rule
too) waits a random delay up to ``min(backoff_max, backoff_base * 2**attempt)``.
``attempt`` counts the retries since the last connection that stayed up for
``stable_after`` seconds (10) after its WELCOME, so a server that welcomes the
client and then closes it again does not reset it. After 1012 the retry is at
once; after 4029 (rate limit exceeded repeatedly) it waits ``rate_limited_delay``
(1 s) more, so a client that keeps being rate limited reconnects at most about
once a second, and more slowly each time.

``url`` may be a list of URLs (the nodes of a cluster, without a load balancer in
front): the client connects to the first, and whenever a connection ends (the node is
unreachable, closed it with 1012 or 1001, or the connection dropped) it tries the next
one, round the list, so an agent whose node dies resumes on another by itself.

``token`` may be a callable (plain or async) instead of a string: it is called
for every connection, and a connection closed with 4001 after its WELCOME (its
token expired) reconnects with a fresh token and resumes. A 4001 at HELLO, and
4009 (another connection took over this client id), end the client with an
error instead.

Usage::

    async with connect("ws://127.0.0.1:8765/rooms/lobby", client="bot-1") as room:
        seq = await room.act("patch", [[0, ["score"], 1]])
        async for change in room.changes():
            render(room.state)
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Literal, TypeAlias

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from statecast.protocol import codec
from statecast.protocol.backoff import (
    BASE_DELAY,
    MAX_DELAY,
    RATE_LIMITED_DELAY,
    STABLE_AFTER,
    Backoff,
)
from statecast.protocol.errors import (
    RETRYABLE_CLOSE_CODES,
    AnswerLost,
    ClientIdTakenOver,
    ConnectFailed,
    MalformedMessage,
    Rejection,
    ServerClosed,
    StatecastError,
)
from statecast.protocol.messages import Action, Role
from statecast.protocol.sync import (
    ActionAcked,
    ActionRejected,
    Changed,
    ClientSync,
    Event,
    ServerNotice,
    StateReplaced,
    Welcomed,
)

__all__ = ["RoomClient", "TokenSource", "connect"]

#: A token, or something that returns a fresh one for each connection.
TokenSource: TypeAlias = str | Callable[[], str] | Callable[[], Awaitable[str]]
#: Where a client is: before its first WELCOME, live, between connections, or done.
Status: TypeAlias = Literal["connecting", "live", "reconnecting", "closed"]


class RoomClient:
    """A live, self-healing view of one room."""

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        role: Role = "agent",
        client: str | None = None,
        token: TokenSource | None = None,
        reconnect: bool = True,
        backoff_base: float = BASE_DELAY,
        backoff_max: float = MAX_DELAY,
        rate_limited_delay: float = RATE_LIMITED_DELAY,
        stable_after: float = STABLE_AFTER,
        open_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        net_change: bool = True,
        view: list[list[str]] | None = None,
    ) -> None:
        self.urls = [url] if isinstance(url, str) else list(url)
        if not self.urls:
            raise ValueError("connect() needs at least one URL")
        #: Which of :attr:`urls` the client connects to next.
        self.url_index = 0
        self.token = token
        fixed = token if isinstance(token, str) else None
        self.sync = ClientSync(
            role=role, client=client, token=fixed, net_change=net_change, view=view
        )
        self.reconnect = reconnect
        self.backoff = Backoff(
            base_delay=backoff_base,
            max_delay=backoff_max,
            rate_limited_delay=rate_limited_delay,
            stable_after=stable_after,
        )
        self.open_timeout = open_timeout
        #: How long start() waits for the first WELCOME before it raises ConnectFailed.
        self.connect_timeout = connect_timeout
        self.status: Status = "connecting"
        self._max_message: int | None = None
        #: Why the last connection attempt failed or ended (for ConnectFailed).
        self.last_error = ""
        self._status_waiters: list[tuple[frozenset[str], asyncio.Future[None]]] = []
        self.connections = 0
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._failure: BaseException | None = None
        self._acts: dict[int, asyncio.Future[ActionAcked]] = {}
        self._listeners: set[asyncio.Queue[Event | None]] = set()
        self._seq_waiters: list[tuple[int, asyncio.Future[None]]] = []

    # --- public API ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The URL of the current (or next) connection."""
        return self.urls[self.url_index]

    @property
    def state(self) -> dict[str, Any]:
        return self.sync.state if self.sync.state is not None else {}

    @property
    def seq(self) -> int:
        return self.sync.seq

    @property
    def epoch(self) -> str | None:
        return self.sync.epoch

    @property
    def client_id(self) -> str | None:
        return self.sync.client

    async def start(self) -> None:
        """Connect and return once the first state is held.

        Raises :class:`ConnectFailed` when no URL gave a WELCOME within
        ``connect_timeout`` (with the last reason: refused, an HTTP status and the
        server's answer, a timeout), or at once when the server refused the handshake
        with a 4xx status; the client is closed then.
        """
        self._task = asyncio.create_task(self._run(), name=f"statecast-client {self.url}")
        waiter = asyncio.ensure_future(self._ready.wait())
        done, _ = await asyncio.wait(
            {waiter, self._task}, timeout=self.connect_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter in done:
            return
        waiter.cancel()
        if self._task in done:
            self._task.result()  # raises what ended the task, if it raised
            self._raise_if_failed()
            raise ServerClosed(1006, "connection ended before the first state")
        failure = ConnectFailed(
            self.url if len(self.urls) == 1 else ", ".join(self.urls),
            f"no WELCOME within {self.connect_timeout:g} s"
            + (f" (last: {self.last_error})" if self.last_error else ""),
        )
        self._fail(failure)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, StatecastError, OSError):
            await self._task
        raise failure

    async def act(self, name: str, args: Any, *, timeout: float | None = None) -> int | None:
        """Send an action; return its ACK seq (None if processed earlier) or raise Rejection.

        A spectator's act() raises ``Rejection("forbidden")`` at once, as the server would
        answer, without sending anything. With ``timeout``, :class:`TimeoutError` after that
        many seconds without an answer; the action stays sent (it is re-sent with its aid
        after a reconnect, and takes effect at most once).
        """
        return (await self._perform(name, args, timeout)).seq

    async def call(self, name: str, args: Any, *, timeout: float | None = None) -> Any:
        """Send an action and return what its handler returned (None if nothing).

        As :meth:`act`, but the result is the handler's answer (docs/protocol.md §5.8):
        a task board's ``claim`` can say which task the agent got. An action re-sent after
        a reconnect gets the same answer, since the room records it with the client's last
        aid; :class:`AnswerLost` if the action took effect while the client was away and a
        later action of this client did too (only the last answer is kept).
        """
        acked = await self._perform(name, args, timeout)
        if not acked.answer_known:
            raise AnswerLost(acked.aid)
        return acked.answer

    async def perform(
        self,
        name: str,
        args: Any,
        *,
        timeout: float | None = None,
        on_aid: Callable[[int], None] | None = None,
    ) -> ActionAcked:
        """Send an action and return its ACK whole: the seq (None if processed earlier) and
        the handler's answer (``answer_known`` False when it is no longer kept), for a
        caller that reports both; raises as :meth:`act` does. ``on_aid`` is called with the
        action's aid before anything is sent, for a caller that records it (to learn the
        outcome from WELCOME's ``acked`` after its own restart)."""
        return await self._perform(name, args, timeout, on_aid)

    async def _perform(
        self,
        name: str,
        args: Any,
        timeout: float | None,
        on_aid: Callable[[int], None] | None = None,
    ) -> ActionAcked:
        self._raise_if_failed()
        if self.sync.role != "agent":
            raise Rejection("forbidden", "spectators may not act")
        self._check_size(name, args)
        aid = self.sync.act(name, args)
        if on_aid is not None:
            on_aid(aid)
        fut: asyncio.Future[ActionAcked] = asyncio.get_running_loop().create_future()
        self._acts[aid] = fut
        await self._flush()
        if timeout is None:
            return await fut
        return await asyncio.wait_for(asyncio.shield(fut), timeout)

    def _check_size(self, name: str, args: Any) -> None:
        """Refuse, here, an action larger than the server accepts (its WELCOME says how
        much): sent, it would close the whole connection with 1009."""
        limit = self.max_message
        if limit is None:
            return
        try:
            size = len(codec.encode(Action(2**53, name, args)))
        except (TypeError, ValueError):
            return  # not encodable: the sync machine says so as it would have
        if size > limit:
            raise Rejection(
                "too_large",
                f"the action is {size} bytes encoded; the server accepts messages of at most "
                f"{limit} bytes",
            )

    @property
    def max_message(self) -> int | None:
        """The largest message the server accepts, from its last WELCOME (None: unknown)."""
        return self._max_message

    async def wait_for_status(self, *statuses: Status, timeout: float | None = None) -> Status:
        """Return once :attr:`status` is one of ``statuses`` (at once if it is)."""
        if self.status in statuses:
            return self.status
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._status_waiters.append((frozenset(statuses), fut))
        await asyncio.wait_for(fut, timeout)
        return self.status

    def _set_status(self, status: Status) -> None:
        self.status = status
        keep = []
        for statuses, fut in self._status_waiters:
            if status in statuses and not fut.done():
                fut.set_result(None)
            elif not fut.done():
                keep.append((statuses, fut))
        self._status_waiters = keep

    def changes(self) -> AsyncIterator[Event]:
        """Every event from this call on: Changed, StateReplaced, Welcomed, ServerNotice.

        Events are held for the iterator from the moment ``changes()`` is called, not
        from its first ``__anext__``: what arrives while the caller is busy elsewhere
        waits in order. Events from before the call are not replayed; they are already
        in :attr:`state` and :attr:`seq`. So reading ``room.state`` and then calling
        ``changes()`` (with no ``await`` between) sees every change exactly once. Once
        the client is closed or its connection ends for good, the iterator raises
        :class:`~statecast.protocol.errors.ServerClosed` (or what else ended it).
        """
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._listeners.add(queue)
        if self._failure is not None:
            queue.put_nowait(None)
        return self._events_from(queue)

    async def _events_from(self, queue: asyncio.Queue[Event | None]) -> AsyncIterator[Event]:
        try:
            while True:
                event = await queue.get()
                if event is None:
                    self._raise_if_failed()
                    return
                yield event
        finally:
            self._listeners.discard(queue)

    async def wait_for_seq(self, seq: int) -> None:
        """Return once the client's state has reached ``seq``."""
        if self.sync.seq >= seq and self.sync.state is not None:
            return
        self._raise_if_failed()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq_waiters.append((seq, fut))
        await fut

    async def set_view(self, view: list[list[str]] | None) -> None:
        """See ``view`` (path prefixes; None: all this connection may see) from now on
        (docs/protocol.md §5.12). The state becomes the new view's at once: what stops
        showing is removed, what starts to show comes with its value now (one
        :class:`Changed`). A view the token does not grant is answered by a
        :class:`ServerNotice` ``forbidden`` and changes nothing."""
        self.sync.set_view(view)
        await self._flush()

    @property
    def view(self) -> list[list[str]] | Literal[True]:
        """The view asked for: path prefixes, or True for all it may see."""
        return self.sync.view

    async def drop_connection(self) -> None:
        """Abort the current connection (for tests and fault drills); it reconnects."""
        if self._ws is not None:
            self._ws.transport.abort()

    async def close(self) -> None:
        self.sync.close()
        # Before the cancel: waiters and iterators see this, not the task's CancelledError.
        self._fail(ServerClosed(1000, "client closed"))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, StatecastError, OSError):
                await self._task

    # --- internals -----------------------------------------------------------------------

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def _flush(self) -> None:
        ws = self._ws
        data = self.sync.data_to_send()
        if ws is None or not data:
            return
        with contextlib.suppress(ConnectionClosed):
            await ws.send(b"".join(data))

    async def _fresh_token(self) -> None:
        if callable(self.token):
            token = self.token()
            self.sync.token = await token if inspect.isawaitable(token) else token

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            welcomed = False
            try:
                await self._fresh_token()
                async with websockets.connect(
                    self.url, max_size=None, open_timeout=self.open_timeout
                ) as ws:
                    self._ws = ws
                    self.connections += 1
                    self.sync.connect()
                    await self._flush()
                    async for frame in ws:
                        if isinstance(frame, str):
                            raise MalformedMessage("text frame from the server")
                        self.sync.receive_frame(frame)
                        if not welcomed:  # the first frame always holds the WELCOME
                            welcomed = True
                            self.backoff.welcomed(loop.time())
                        self._dispatch(self.sync.events_received())
                        await self._flush()
                    code = ws.close_code if ws.close_code is not None else 1006
                    reason = ws.close_reason or ""
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else 1006
                reason = exc.rcvd.reason if exc.rcvd is not None else "connection lost"
            except InvalidStatus as exc:
                body = exc.response.body.decode(errors="replace").strip()[:200]
                reason = f"HTTP {exc.response.status_code}" + (f": {body}" if body else "")
                code, self.last_error = 1006, f"{self.url}: {reason}"
                if exc.response.status_code < 500:
                    failure = ServerClosed(code, f"handshake refused: {reason}")
                    if not welcomed and self.connections == 0:
                        self._fail(ConnectFailed(self.url, f"the server answered {reason}"))
                    else:
                        self._fail(failure)
                    return
            except ConnectionRefusedError:
                code, reason = 1006, "connection refused (nothing listens there)"
                self.last_error = f"{self.url}: {reason}"
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                code, reason = 1006, str(exc) or type(exc).__name__
                self.last_error = f"{self.url}: {reason}"
            except BaseException as exc:
                self._fail(exc)
                raise
            finally:
                self._ws = None
                self.sync.connection_lost()
            if self.sync.state_kind.value == "closed":
                self._set_status("closed")
                return
            if welcomed:
                self.last_error = f"{self.url}: closed {code} {reason}".strip()
            if code == 4009:
                self._fail(ClientIdTakenOver(self.sync.client, reason))
                return
            expired = code == 4001 and welcomed and callable(self.token)
            if not self.reconnect or (code not in RETRYABLE_CLOSE_CODES and not expired):
                self._fail(ServerClosed(code, reason))
                return
            # Another node of the cluster may be up where this one is not.
            self.url_index = (self.url_index + 1) % len(self.urls)
            self._set_status("connecting" if not self._ready.is_set() else "reconnecting")
            await asyncio.sleep(self.backoff.delay(code, loop.time(), random.random()))

    def _dispatch(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Welcomed):
                self._max_message = event.welcome.max_message
            if isinstance(event, ActionAcked):
                fut = self._acts.pop(event.aid, None)
                if fut is not None and not fut.done():
                    fut.set_result(event)
                continue
            if isinstance(event, ActionRejected):
                fut = self._acts.pop(event.aid, None)
                if fut is not None and not fut.done():
                    fut.set_exception(Rejection(event.code, event.message))
                continue
            if isinstance(event, (StateReplaced, Changed)) and self.sync.live:
                self._ready.set()
            for queue in self._listeners:
                queue.put_nowait(event)
        if self._seq_waiters and self.sync.state is not None:
            keep: list[tuple[int, asyncio.Future[None]]] = []
            for seq, waiter in self._seq_waiters:
                if self.sync.seq >= seq:
                    if not waiter.done():
                        waiter.set_result(None)
                else:
                    keep.append((seq, waiter))
            self._seq_waiters = keep
        if self.sync.live:
            self._ready.set()
            if self.status != "live":
                self._set_status("live")

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        self._set_status("closed")
        for fut in self._acts.values():
            if not fut.done():
                fut.set_exception(exc)
        self._acts.clear()
        for _, waiter in self._seq_waiters:
            if not waiter.done():
                waiter.set_exception(exc)
        self._seq_waiters.clear()
        for queue in self._listeners:
            queue.put_nowait(None)


@contextlib.asynccontextmanager
async def connect(
    url: str | Sequence[str],
    *,
    role: Role = "agent",
    client: str | None = None,
    token: TokenSource | None = None,
    reconnect: bool = True,
    open_timeout: float = 10.0,
    connect_timeout: float = 10.0,
    net_change: bool = True,
    view: list[list[str]] | None = None,
) -> AsyncIterator[RoomClient]:
    """Join a room and keep its state in sync until the block exits.

    ``url`` is one room URL or several (the same room on each node of a cluster): the
    client moves to the next one when a connection ends. The first WELCOME must come
    within ``connect_timeout`` seconds, else :class:`ConnectFailed` says why (nothing
    listening, the HTTP status and the server's answer); after it, the client reconnects
    by itself whatever happens.

    ``token`` is a JWT, or a callable (sync or async) returning a fresh one for
    each connection, so the client resumes by itself when an open connection's
    token expires (close 4001).

    ``net_change``: after an absence, catch up by the net change (one PATCH, reported
    as one :class:`Changed`) when that is the smallest answer; False for a client that
    must see every change, which then gets a replay or a SNAPSHOT (docs/protocol.md §5.11).

    ``view``: the part of the room to see, as path prefixes (``[["board"], ["players",
    "p7"]]``); the state then holds only what is at or under them, and changes come only
    when they change (docs/protocol.md §5.12). None: all this connection may see.
    """
    room = RoomClient(
        url,
        role=role,
        client=client,
        token=token,
        reconnect=reconnect,
        open_timeout=open_timeout,
        connect_timeout=connect_timeout,
        net_change=net_change,
        view=view,
    )
    try:
        await room.start()
        yield room
    finally:
        await room.close()


__all__ += ["ActionAcked", "Changed", "ServerNotice", "StateReplaced", "Welcomed"]

"""The WebSocket listener: handshake routing and one session per connection."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, cast
from urllib.parse import unquote

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers, MultipleValuesError
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from statecast.protocol import codec
from statecast.protocol.errors import (
    MalformedMessage,
    NoSuchRoom,
    NotPermitted,
    OutOfOrder,
    ProtocolViolation,
    Rejection,
)
from statecast.protocol.messages import PROTOCOL_VERSION, Action, Error, Hello, Resync, View
from statecast.protocol.rooms import ROOM_NAME_PATTERN, room_name_problem
from statecast.protocol.views import (
    ALL,
    Spec,
    covers,
    effective,
    from_prefixes,
    spec_tag,
    wire_prefixes,
)
from statecast.server.auth import Identity
from statecast.server.fanout import FeedConnection, Subscriber, close_or_abort
from statecast.server.gate import Gate
from statecast.server.live import LiveRoom, RoomFailed
from statecast.server.live import Request as ActionRequest
from statecast.server.quotas import requester
from statecast.server.registry import RoomTypeMissing
from statecast.server.store.base import StoreUnavailable

if TYPE_CHECKING:
    from statecast.server.app import App

log = structlog.get_logger()

ROOM_PATH = re.compile(rf"/rooms/({ROOM_NAME_PATTERN})")


def room_from_path(path: str) -> str | None:
    match = ROOM_PATH.fullmatch(path.split("?", 1)[0])
    return match.group(1) if match else None


def _plain(conn: ServerConnection, status: HTTPStatus, text: str) -> Response:
    return conn.respond(status, text + "\n")


class WebSocketListener:
    def __init__(self, app: App) -> None:
        self.app = app
        self.gate = Gate(app)
        self.server: Server | None = None
        #: Connections past the handshake (counted here: Server.connections is O(n)).
        self.open = 0
        self._closing: set[asyncio.Task[None]] = set()

    def take_over(self, conn: ServerConnection) -> None:
        """Close an agent's older connection: a newer HELLO took its client id (4009)."""
        self.close_later(conn, 4009, "another connection took over this client id")

    def close_later(self, conn: ServerConnection, code: int, reason: str) -> None:
        """Close another session's connection without waiting for it."""
        self.app.metrics.closes.labels(str(code)).inc()
        closing = close_or_abort(conn, code, reason, self.app.config.slow_timeout)
        task = asyncio.create_task(closing)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def start(self) -> int:
        config = self.app.config
        self.server = await serve(
            self.handle,
            config.host,
            config.port,
            process_request=self.process_request,
            create_connection=FeedConnection,
            # A handshake trickling in (slowloris) is cut off like a late HELLO.
            open_timeout=config.hello_timeout,
            max_size=config.max_message_bytes,
            compression="deflate" if config.compression else None,
            ping_interval=config.ping_interval or None,
            ping_timeout=config.ping_timeout or None,
            # websockets' own flow control would pause on 32 KiB; statecast's
            # fan-out never awaits a subscriber and bounds backlogs itself.
            write_limit=config.slow_high_water,
            reuse_port=config.reuse_port or None,
        )
        sockname = next(iter(self.server.sockets)).getsockname()
        return int(sockname[1])

    def process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        try:
            refusal = self.gate.host_problem(request.headers.get("Host"))
            if refusal is None:
                refusal = self.gate.origin_problem(request.headers.get("Origin"))
        except MultipleValuesError:
            refusal = "a handshake carries one Host and at most one Origin"
        if refusal is not None:
            log.warning("handshake refused", reason=refusal)
            return _plain(conn, HTTPStatus.FORBIDDEN, refusal)
        if room_from_path(request.path) is None:
            path = request.path.split("?", 1)[0]
            if path.startswith("/rooms/") and path.count("/") == 2:
                problem = room_name_problem(unquote(path.removeprefix("/rooms/")))
                # 404 as the base contract says for any other path; the body names the rule.
                return _plain(conn, HTTPStatus.NOT_FOUND, problem or "bad room name")
            return _plain(conn, HTTPStatus.NOT_FOUND, "no such endpoint: use /rooms/{room}")
        if self.open >= self.app.config.max_connections:
            response = _plain(conn, HTTPStatus.SERVICE_UNAVAILABLE, "too many connections")
            response.headers = Headers({**dict(response.headers), "Retry-After": "1"})
            return response
        return None

    async def handle(self, conn: ServerConnection) -> None:
        room = room_from_path(conn.request.path if conn.request else "") or ""
        self.open += 1
        try:
            if self.open > self.app.config.max_connections:
                # Handshakes that passed process_request together went over.
                await conn.close(1013, "too many connections")
                return
            # serve() makes every connection a FeedConnection (create_connection below).
            await Session(self.app, cast(FeedConnection, conn), room).run()
        finally:
            self.open -= 1

    async def close_all(self, code: int, reason: str) -> None:
        """Close every connection with ``code`` (each gets the close timeout to take it)."""
        if self.server is None:
            return
        timeout = min(self.app.config.slow_timeout, 5.0)
        await asyncio.gather(
            *(close_or_abort(conn, code, reason, timeout) for conn in self.server.connections)
        )

    def close(self) -> None:
        if self.server is not None:
            self.server.close(close_connections=True)

    async def wait_closed(self) -> None:
        if self.server is not None:
            await self.server.wait_closed()


class Session:
    """One connection: HELLO, then frames of ACTION and RESYNC until it closes."""

    def __init__(self, app: App, conn: FeedConnection, room_name: str) -> None:
        self.app = app
        self.conn = conn
        self.room_name = room_name
        self.room: LiveRoom | None = None
        self.sub: Subscriber | None = None
        self.limiter = app.new_rate_limiter()
        self._expiry: asyncio.TimerHandle | None = None
        self._present = False  # counted by the room's presence
        #: Who this connection counts against (server/quotas.py), once its HELLO is read.
        self.identity: str | None = None
        #: WELCOME's acked: the client's last aid, which it may send once again for its
        #: answer (docs/protocol.md §5.8); no limit refuses that one (0: none pending).
        self._resend = 0
        self._counted = False  # in the identity's connections
        #: What the HELLO's credentials allow (client id, role, the token's view).
        self.grant: Identity | None = None

    async def run(self) -> None:
        config = self.app.config
        structlog.contextvars.bind_contextvars(room=self.room_name)
        metrics = self.app.metrics
        try:
            try:
                first = await asyncio.wait_for(self.conn.recv(), config.hello_timeout)
            except TimeoutError:
                raise OutOfOrder("no HELLO in time") from None
            messages = self._decode(first)
            hello = messages[0]
            if not isinstance(hello, Hello):
                raise OutOfOrder("the first message must be HELLO")
            await self._hello(hello)
            metrics.connections.labels(self._role()).inc()
            try:
                await self._handle(messages[1:], len(first))
                async for frame in self.conn:
                    await self._handle(self._decode(frame), len(frame))
            finally:
                metrics.connections.labels(self._role()).dec()
        except ProtocolViolation as exc:
            log.info("closing", code=exc.close_code, reason=exc.reason)
            await self._close(exc.close_code, exc.reason[:120])
        except RoomFailed:
            await self._close(1011, "room failed")
        except RoomTypeMissing as exc:  # logged once per room by the manager
            await self._close(4011, f"room type not registered here: {exc.stored}"[:120])
        except StoreUnavailable:  # the room could not be loaded: retry with backoff
            log.warning("store unreachable", code=1011)
            await self._close(1011, "the store cannot be reached now: try again")
        except ConnectionClosed:
            pass
        finally:
            if self._counted and self.identity is not None:
                self.app.quotas.disconnect(self.identity)
            if self._expiry is not None:
                self._expiry.cancel()
            if self.room is not None and self.sub is not None:
                self.room.feed.leave(self.sub)
                self.room.feed.connections -= 1
                self.room.touch()
                if self._present:
                    current = self.room.presence.is_current(self.sub)
                    self.room.presence.depart(self.sub)
                    if self.app.cluster is not None:
                        self.app.cluster.agent_left(self.room, self.sub, current)

    def _peer(self) -> str | None:
        address = self.conn.remote_address
        return str(address[0]) if address else None

    def _forwarded(self) -> str | None:
        request = self.conn.request
        if request is None:
            return None
        values = request.headers.get_all("X-Forwarded-For")
        return ",".join(values) if values else None

    async def _close(self, code: int, reason: str) -> None:
        """Close from the session's own task, reading (and dropping) what the client sent
        meanwhile: websockets stops reading the socket once its queue of unread messages is
        full, and would then never see the client's answering close frame, so the client
        would learn of the close only when its close timeout ran out."""
        self.app.metrics.closes.labels(str(code)).inc()
        discard = asyncio.create_task(self._discard())
        try:
            await close_or_abort(self.conn, code, reason, self.app.config.slow_timeout)
        finally:
            discard.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await discard

    async def _discard(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for _ in self.conn:
                pass

    def _role(self) -> str:
        return self.sub.role if self.sub is not None else "none"

    def _decode(self, frame: str | bytes) -> list[Hello | Action | Resync | View]:
        if isinstance(frame, str):
            raise _TextFrame("text frames are not accepted")
        return codec.decode_client_frame(frame, self.app.config.max_message_bytes)

    async def _hello(self, hello: Hello) -> None:
        if hello.v != PROTOCOL_VERSION:
            raise OutOfOrder(f"unsupported protocol version {hello.v}")
        identity = self.app.auth.authorize(hello.token, self.room_name, hello.role, hello.client)
        quotas = self.app.quotas
        subject = identity.client if self.app.config.auth == "jwt" else None
        self.identity = who = quotas.identity(subject, self._peer(), self._forwarded())
        refusal = quotas.connect(who)
        if refusal is not None:
            raise _Refused(refusal)
        self._counted = True
        token = requester.set(who)
        try:
            # A spectator never creates a room (a mistyped name is 4004, not an empty room).
            create = self.app.config.create_rooms and identity.role == "agent"
            room = await self.app.rooms.require(self.room_name, create=create)
        except Rejection as exc:
            raise _Refused(exc.message) from None
        except NoSuchRoom:
            if identity.role == "agent":
                raise
            raise NoSuchRoom(
                f"no room {self.room_name!r}: spectators never create rooms, agents do"
            ) from None
        finally:
            requester.reset(token)
        config = self.app.config
        client = identity.client if identity.role == "agent" else None
        taking_over = client is not None and client in room.presence.connected
        cap = config.max_room_connections
        if cap and room.feed.connections >= cap and not taking_over:
            raise _Refused("the room holds its maximum number of connections")
        if client is not None and config.auth == "none" and not room.may_record(client):
            raise NotPermitted(
                f"the room records at most {config.max_room_clients} client ids: reuse one"
            )
        if (
            client is not None
            and client not in room.feed.acked
            and not quotas.may_bring(room.introduced, who, client)
        ):
            raise NotPermitted(
                f"this address brought {config.room_clients_per_identity} client ids into the "
                f"room (--room-clients-per-identity): reuse one"
            )
        cluster = self.app.cluster
        number = None
        if cluster is not None and client is not None:
            number = await cluster.number_hello(room)  # numbered before it joins: 4009 order
        self.room = room
        room.feed.connections += 1
        self.grant = identity
        spec = self._spec(None if hello.view is True else hello.view, room)
        if hello.view is None and spec is not ALL:
            raise NotPermitted(
                "this connection sees only part of the room (its token's view, or the room "
                "type's private parts): use a client that sends HELLO 'view' (§5.12)"
            )
        self.sub = sub = Subscriber(
            self.conn,
            identity.role,
            identity.client,
            answers=hello.answers,
            patch=hello.patch,
            view=hello.view
            if hello.view is None or hello.view is True
            else wire_prefixes(hello.view),
            spec=spec,
        )
        resume = hello.resume
        if resume is not None and hello.view_tag not in (None, spec_tag(spec)):
            resume = None  # its copy is of another view (its token changed, say): SNAPSHOT
        welcome = await room.feed.join(sub, resume)
        self._resend = welcome.acked
        structlog.contextvars.bind_contextvars(conn=sub.id)
        log.debug("joined", role=identity.role, client=identity.client, sync=welcome.sync)
        older = room.presence.arrive(sub)
        self._present = True
        if cluster is not None and client is not None:
            cluster.agent_arrived(room, sub, number)  # the same client id on another node: 4009
        if older is not None:
            room.feed.leave(older)  # no more DIFFs for it
            log.warning("client id taken over", client=client, older=older.id)
            self.app.ws.take_over(older.conn)
        if identity.expires is not None:
            delay = max(0.0, identity.expires - time.time())
            self._expiry = asyncio.get_running_loop().call_later(delay, self._expire)

    def _spec(self, asked: list[list[str]] | None, room: LiveRoom) -> Spec:
        """What the connection sees of the room: what it asked for, within its token's
        view claim (asking beyond it is refused: 4003 at HELLO, ERROR forbidden on a
        VIEW) and the room type's private parts (docs/protocol.md §5.12)."""
        grant = self.grant
        assert grant is not None
        if (
            asked is not None
            and grant.view is not None
            and not covers(from_prefixes(grant.view), from_prefixes(asked))
        ):
            log.warning("view refused", asked=asked, granted=grant.view, client=grant.client)
            raise NotPermitted(
                f"the token lets this connection read only {[list(p) for p in grant.view]}"
            )
        return effective(asked, grant.view, room.feed.private, grant.client)

    async def _view(self, room: LiveRoom, sub: Subscriber, view: View) -> None:
        refusal = self.limiter.check()  # a view change costs about what a RESYNC does
        if refusal is not None:
            sub.send(codec.encode(Error(None, "rate_limited", refusal)))
            return
        asked = None if view.prefixes is True else view.prefixes
        try:
            spec = self._spec(asked, room)
        except NotPermitted as exc:
            sub.send(codec.encode(Error(None, "forbidden", exc.reason)))
            return
        await room.feed.change_view(sub, spec, True if asked is None else wire_prefixes(asked))

    def _expire(self) -> None:
        log.info("token expired", code=4001)
        self.app.ws.close_later(self.conn, 4001, "token expired")

    async def _handle(self, messages: list[Hello | Action | Resync | View], size: int) -> None:
        room, sub = self.room, self.sub
        assert room is not None and sub is not None
        # The frame's bytes count against the identity's writes when it carries actions.
        over = None
        if any(type(m) is Action and m.aid != self._resend for m in messages):
            over = self.app.quotas.write(self.identity, size)
        for message in messages:
            if isinstance(message, Action):
                if message.aid == self._resend:
                    # Already processed: ACK nil (and its answer), never applied again, so
                    # never refused by a limit either (an ERROR says it changed nothing).
                    self._resend = 0
                    self._submit(room, sub, message)
                    continue
                if over is not None:
                    sub.send(codec.encode(Error(message.aid, "rate_limited", over)))
                    continue
                self._action(room, sub, message)
            elif isinstance(message, Resync):
                # A RESYNC can cost a whole SNAPSHOT: it spends a token like an ACTION.
                refusal = self.limiter.check()
                if refusal is not None:
                    sub.send(codec.encode(Error(None, "rate_limited", refusal)))
                    continue
                if sub.backlog() > self.app.config.slow_high_water and sub in room.feed.members:
                    # Asking again while earlier answers still wait unread: a slow
                    # consumer. The SNAPSHOT it gets once drained answers this RESYNC;
                    # answering each would queue a snapshot per tiny message.
                    room.feed.skip_ahead(sub)
                    continue
                await room.feed.resync(sub, message.epoch, message.seq)
            elif isinstance(message, View):
                await self._view(room, sub, message)
            else:
                raise OutOfOrder("HELLO twice")

    def _action(self, room: LiveRoom, sub: Subscriber, action: Action) -> None:
        # The bucket comes first, so a spectator's refused actions are limited too.
        refusal = self.limiter.check()
        if refusal is None:  # then the identity's, over all its connections and client ids
            refusal = self.app.quotas.act(self.identity)
        if refusal is not None:
            sub.send(codec.encode(Error(action.aid, "rate_limited", refusal)))
            return
        self._submit(room, sub, action)

    def _submit(self, room: LiveRoom, sub: Subscriber, action: Action) -> None:
        if sub.role != "agent" or sub.client is None:
            sub.send(codec.encode(Error(action.aid, "forbidden", "spectators may not act")))
            return
        if not room.presence.is_current(sub):
            return  # taken over: its connection is closing with 4009
        room.submit(
            ActionRequest(
                sub.client, action.aid, action.name, action.args, sub, time.perf_counter()
            )
        )


class _TextFrame(MalformedMessage):
    close_code = 1003


class _Refused(ProtocolViolation):
    """A limit refuses the join; the client should back off and try again."""

    close_code = 1013

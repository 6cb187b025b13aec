"""The HTTP side (aiohttp): polling with ETag/304, the changefeed, actions, health, metrics."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import msgpack
import structlog
from aiohttp import web

from statecast.protocol.errors import NotPermitted, ProtocolViolation, Rejection
from statecast.protocol.ops import MAX_SAFE_INT
from statecast.protocol.rooms import ROOM_NAME_PATTERN, ROOM_NAME_RULE, room_name_problem
from statecast.protocol.views import (
    ALL,
    Spec,
    check_prefixes,
    covers,
    effective,
    from_prefixes,
    restrict,
)
from statecast.server.auth import MAX_CLIENT_ID_LENGTH, Identity
from statecast.server.cluster.forwarding import OutcomeUnknown
from statecast.server.cors import enable_cors, parse_origins
from statecast.server.feed import RoomFailed, RoomFeed
from statecast.server.gate import Gate
from statecast.server.limits import TokenBucket
from statecast.server.listing import Listing, bearer
from statecast.server.live import LiveRoom, Request
from statecast.server.pages import Pages
from statecast.server.quotas import requester
from statecast.server.registry import RoomTypeMissing
from statecast.server.store.base import StoreUnavailable

if TYPE_CHECKING:
    from statecast.server.app import App

log = structlog.get_logger()

CHANGES_LIMIT = 1000
BUCKETS_HELD = 10_000
_ROOM = ROOM_NAME_PATTERN

_AUTH_STATUS = {4001: 401, 4003: 403, 4004: 404}


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


def _matches(request: web.Request, etag: str) -> bool:
    """If-None-Match with weak comparison: any listed tag, or ``*``, matches."""
    tags = request.if_none_match
    if not tags:
        return False
    opaque = etag.strip('"')
    return any(t.value == "*" or t.value == opaque for t in tags)


class HttpListener:
    def __init__(self, app: App) -> None:
        self.app = app
        self.runner: web.AppRunner | None = None
        #: Action rate per client id (HTTP has no session to hang a bucket on).
        self.buckets: dict[str, TokenBucket] = {}
        self.web = web.Application(client_max_size=app.config.http_max_body)
        r = self.web.router
        r.add_get(f"/rooms/{{room:{_ROOM}}}/state", self.state)
        r.add_get(f"/rooms/{{room:{_ROOM}}}/head", self.head)
        r.add_get(f"/rooms/{{room:{_ROOM}}}/changes", self.changes)
        r.add_post(f"/rooms/{{room:{_ROOM}}}/actions", self.actions)
        r.add_get(f"/rooms/{{room:{_ROOM}}}/clients/{{client}}", self.client)
        self.listing = Listing(app)
        r.add_get("/rooms", self.listing.rooms)
        r.add_get(f"/rooms/{{room:{_ROOM}}}", self.listing.room)
        pages = Pages(app)
        pages.add_routes(r, _ROOM)
        r.add_get("/healthz", self.healthz)
        r.add_get("/metrics", self.metrics)
        # Last: a /rooms/{room}... path whose name breaks the rule gets the rule, not a 404.
        r.add_get("/rooms/{room}/watch", pages.bad_room_name)
        r.add_get("/rooms/{room}{tail:(/.*)?}", self.bad_room_name)
        r.add_post("/rooms/{room}{tail:(/.*)?}", self.bad_room_name)
        self.web.middlewares.append(self._errors)
        self.web.on_response_prepare.append(self._security_headers)
        self.gate = Gate(app)

    async def start(self) -> int:
        config = self.app.config
        if config.cors_origins:  # here, once every route is added
            enable_cors(self.web, parse_origins(config.cors_origins))
        self.runner = web.AppRunner(
            self.web,
            access_log=None,
            keepalive_timeout=config.http_idle_timeout,
            shutdown_timeout=2.0,
        )
        await self.runner.setup()
        site = web.TCPSite(
            self.runner, config.host, config.http_port, reuse_port=config.reuse_port or None
        )
        await site.start()
        server: Any = site._server
        return int(server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _security_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        """On every answer: no MIME sniffing, no referrer, no framing, no versions in
        ``Server``; on the pages, a CSP that allows only this server's own scripts and styles
        (the client is ES modules, nothing inline) and WebSockets to its own listener."""
        headers = response.headers
        headers["Server"] = "statecast"
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "no-referrer")
        headers.setdefault("X-Frame-Options", "DENY")
        if response.content_type == "text/html":
            ports = self.app.ports
            ws_port = ports.ws if ports is not None else self.app.config.port
            host = request.url.host or self.app.config.host
            if ":" in host:  # an IPv6 literal
                host = f"[{host}]"
            headers["Content-Security-Policy"] = (
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                f"font-src 'self'; connect-src 'self' ws://{host}:{ws_port} "
                f"wss://{host}:{ws_port}; base-uri 'none'; form-action 'none'; "
                "frame-ancestors 'none'"
            )

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        refusal = self.gate.host_problem(request.headers.get("Host"))
        if refusal is None and request.method == "POST":
            refusal = self.gate.origin_problem(request.headers.get("Origin"))
        if refusal is not None:
            log.warning("request refused", route=name, reason=refusal)
            self.app.metrics.http_requests.labels(name, "403").inc()
            return error(403, "forbidden", refusal)
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            code = "too_large" if exc.status == 413 else exc.reason.lower().replace(" ", "_")
            response = error(exc.status, code, exc.text or "")
        except Rejection as exc:
            response = error(exc.http_status, exc.code, exc.message)
            if exc.code == "unavailable":  # not processed: the same aid may be sent again
                response.headers["Retry-After"] = "1"
        except ProtocolViolation as exc:
            status = _AUTH_STATUS.get(exc.close_code, 400)
            code = {401: "unauthenticated", 403: "forbidden", 404: "no_such_room"}.get(
                status, "invalid"
            )
            response = error(status, code, exc.reason)
            if status == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="statecast"'
        except RoomFailed as exc:
            response = error(503, "unavailable", str(exc))
            response.headers["Retry-After"] = "1"
        except RoomTypeMissing as exc:  # an operator's mistake: logged once per room
            response = error(503, "room_type_missing", str(exc))
        except StoreUnavailable:
            # Not processed (a write whose outcome is unknown is answered by the writer,
            # not here): the same request may be sent again. The store's own error stays
            # in the log, not in the answer.
            log.warning("store unreachable", route=name)
            response = error(503, "unavailable", "the store cannot be reached now: try again")
            response.headers["Retry-After"] = "1"
        except OutcomeUnknown as exc:
            response = error(
                504,
                "timeout",
                f"{exc}: GET /rooms/{{room}}/clients/{{client}} tells whether it was processed",
            )
        self.app.metrics.http_requests.labels(name, str(response.status)).inc()
        return response

    async def bad_room_name(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["room"]
        return error(400, "invalid", room_name_problem(name) or ROOM_NAME_RULE)

    async def _room(self, request: web.Request, *, create: bool = False) -> LiveRoom:
        name = request.match_info["room"]
        live = await self.app.rooms.get(name, create=create)
        if live is None:
            raise _NoRoom(name)
        return live

    async def _feed(self, request: web.Request) -> RoomFeed:
        return (await self._room(request)).feed

    def _read_auth(self, request: web.Request, room: str, role: str) -> str | None:
        identity = self.app.auth.authorize(bearer(request), room, role, None)  # type: ignore[arg-type]
        return identity.client

    def _read_view(
        self, request: web.Request, room: str
    ) -> tuple[Identity, list[list[str]] | None]:
        """The reader's identity and what it sees of ``feed``'s room: the ``view`` query
        parameter (JSON path prefixes) within its token's view claim (403 beyond it) and
        the room type's private parts (docs/protocol.md §5.12, §10.3)."""
        identity = self.app.auth.authorize(bearer(request), room, "spectator", None)
        asked = None
        text = request.query.get("view")
        if text is not None:
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = None
            try:
                asked = check_prefixes(value, "view")
            except ValueError as exc:
                raise Rejection("invalid", str(exc)) from None
        if (
            asked is not None
            and identity.view is not None
            and not covers(from_prefixes(identity.view), from_prefixes(asked))
        ):
            log.warning("view refused", asked=asked, granted=identity.view)
            raise NotPermitted(
                f"the token lets this reader read only {[list(p) for p in identity.view]}"
            )
        return identity, asked

    async def _spec(self, request: web.Request) -> tuple[RoomFeed, Spec]:
        identity, asked = self._read_view(request, request.match_info["room"])
        feed = await self._feed(request)
        return feed, effective(asked, identity.view, feed.private, identity.client)

    async def state(self, request: web.Request) -> web.StreamResponse:
        feed, spec = await self._spec(request)
        if spec is not ALL:
            await feed.settled()
            etag, view, _ = feed.view_state(spec)
            if _matches(request, etag):
                return web.Response(status=304, headers={"ETag": etag})
            payload = {"epoch": feed.epoch, "seq": feed.head, "state": view}
            return web.json_response(payload, dumps=_dumps, headers={"ETag": etag})
        etag, body = await feed.state_json()
        if _matches(request, etag):
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=body, content_type="application/json", headers={"ETag": etag})

    async def head(self, request: web.Request) -> web.StreamResponse:
        feed, spec = await self._spec(request)
        await feed.settled()
        etag, digest = feed.etag, None
        if spec is not ALL:
            etag, _, digest = feed.view_state(spec)
        if _matches(request, etag):
            return web.Response(status=304, headers={"ETag": etag})
        body = {
            "epoch": feed.epoch,
            "seq": feed.head,
            # A view's digest is its own state's: the room's would tell what it hides.
            "digest": feed.digest() if digest is None else digest,
            "oldest": feed.oldest,
        }
        return web.json_response(body, headers={"ETag": etag})

    async def changes(self, request: web.Request) -> web.StreamResponse:
        identity, asked = self._read_view(request, request.match_info["room"])
        epoch = request.query.get("epoch")
        since_text = request.query.get("since")
        if not epoch or since_text is None:
            return error(400, "invalid", "epoch and since are required")
        # Decimal digits only: int() would also take "+1", " 1", "1_0" and non-ASCII digits.
        if not (since_text.isascii() and since_text.isdigit()):
            return error(400, "invalid", "since must be an integer >= 0")
        try:
            since = int(since_text)
        except ValueError:  # past int()'s limit on digits
            return error(400, "invalid", "since is too long")
        feed = await self._feed(request)
        spec = effective(asked, identity.view, feed.private, identity.client)
        await feed.settled()
        if spec is not ALL and request.query.get("compact") != "1":
            return error(
                400,
                "invalid",
                "a view's changes are its net change: add compact=1 (docs/protocol.md §10.4)",
            )
        if request.query.get("compact") == "1":
            # The net change (docs/protocol.md §10.4): one op per entry that differs.
            index = feed.history.index
            net = index.net_change(feed.state, since) if epoch == feed.epoch else None
            if net is None or since > feed.head:
                return error(
                    410, "gone", "that seq is past the horizon or of another epoch: fetch /state"
                )
            body = {
                "epoch": feed.epoch,
                "from": since,
                "to": feed.head,
                "horizon": index.horizon,
                "ops": net if spec is ALL else restrict(net, feed.state, spec),
            }
            return web.json_response(body, dumps=_dumps)
        if epoch != feed.epoch or since > feed.head or since < feed.oldest:
            return error(410, "gone", "those changes are not held: fetch /state instead")
        changes = feed.changes_after(since, CHANGES_LIMIT)
        last = changes[-1]["seq"] if changes else since
        body = {"epoch": feed.epoch, "from": since + 1, "to": last, "changes": changes}
        return web.json_response(body, dumps=_dumps)

    async def actions(self, request: web.Request) -> web.StreamResponse:
        room_name = request.match_info["room"]
        token_client = self._read_auth(request, room_name, "agent")
        if request.content_type != "application/json":
            # A page on another origin can send a "simple" POST (text/plain, no-cors)
            # without asking; it cannot send application/json without a CORS preflight.
            return error(
                415,
                "invalid",
                "POST actions need Content-Type: application/json "
                f"(got {request.content_type or 'none'})",
            )
        try:
            # A body trickling in is cut off like an idle connection (aiohttp's
            # keep-alive timer only covers the wait for a request's headers).
            async with asyncio.timeout(self.app.config.http_idle_timeout):
                raw = await request.read()
        except TimeoutError:
            response = error(408, "timeout", "the request body did not arrive in time")
            response.force_close()
            return response
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # JSONDecodeError, bad UTF-8, too many digits
            return error(400, "invalid", "the body must be JSON")
        if type(body) is not dict:
            return error(400, "invalid", "the body must be a JSON object")
        client, aid, name = body.get("client"), body.get("aid"), body.get("name")
        if token_client is not None and self.app.config.auth != "none":
            client = token_client
        if type(client) is not str or not client or not _utf8(client):
            return error(400, "invalid", "client must be a non-empty string")
        if len(client) > MAX_CLIENT_ID_LENGTH:
            longest = MAX_CLIENT_ID_LENGTH
            return error(400, "invalid", f"client ids are at most {longest} characters")
        if type(aid) is not int or not 1 <= aid <= MAX_SAFE_INT:
            return error(400, "invalid", "aid must be an integer >= 1")
        if type(name) is not str:
            return error(400, "invalid", "name must be a string")
        if not self._bucket(client).take():
            return error(429, "rate_limited", f"over {self.app.config.action_rate:g} actions/s")
        quotas = self.app.quotas
        forwarded = ",".join(request.headers.getall("X-Forwarded-For", [])) or None
        who = quotas.identity(token_client, request.remote, forwarded)
        refusal = quotas.act(who) or quotas.write(who, len(raw))
        if refusal is not None:
            return error(429, "rate_limited", refusal)
        token = requester.set(who)
        try:
            live = await self._room(request, create=self.app.config.create_rooms)
        finally:
            requester.reset(token)
        if client not in live.feed.acked and not quotas.may_bring(live.introduced, who, client):
            return error(
                403,
                "forbidden",
                f"this address brought {self.app.config.room_clients_per_identity} client ids "
                f"into the room (--room-clients-per-identity): reuse one",
            )
        reply: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        req = Request(client, aid, name, body.get("args"), reply, time.perf_counter())
        live.submit(req)
        seq = await reply
        if req.answer is None:
            return web.json_response({"seq": seq})
        # The handler's answer (docs/protocol.md §10.5): a state value, so JSON can hold it.
        return web.json_response({"seq": seq, "answer": msgpack.unpackb(req.answer, raw=False)})

    def _bucket(self, client: str) -> TokenBucket:
        bucket = self.buckets.get(client)
        if bucket is None:
            if len(self.buckets) >= BUCKETS_HELD:
                self.buckets.clear()  # bounded memory; at worst a burst is granted again
            c = self.app.config
            bucket = self.buckets[client] = TokenBucket(c.action_rate, c.action_burst, 0)
        return bucket

    async def client(self, request: web.Request) -> web.StreamResponse:
        identity = self.app.auth.authorize(
            bearer(request), request.match_info["room"], "spectator", None
        )
        client = request.match_info["client"]
        if identity.view is not None and client != identity.client:
            # Another agent's last aid says when it acted: not for a view-limited reader.
            raise NotPermitted("a token with a view claim reads its own client's record only")
        feed = await self._feed(request)
        await feed.settled()
        return web.json_response({"client": client, "acked": feed.acked.get(client, 0)})

    async def healthz(self, request: web.Request) -> web.StreamResponse:
        if not self.app.ready:
            return error(503, "starting", "not ready")
        cluster = self.app.cluster
        if cluster is not None and not await cluster.store.ping():
            return error(503, "degraded", "redis is unreachable: actions are refused meanwhile")
        # Status only: counts and process ids are for /metrics, which an operator protects.
        return web.json_response({"status": "ok"})

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=self.app.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"}
        )


def _utf8(text: str) -> bool:
    """False for text UTF-8 cannot encode: JSON's lone surrogates ("\\ud800"), which no store
    can hold (a client id is stored with its last aid)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


class _NoRoom(ProtocolViolation):
    close_code = 4004

    def __init__(self, room: str) -> None:
        super().__init__(f"no room {room!r}")

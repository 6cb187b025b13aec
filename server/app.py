"""The server's lifecycle: one object starts and stops the store, the rooms and both listeners.

The listeners only listen; shutdown happens here, in one place and in order:
stop taking actions, let every room finish its inbox, close every WebSocket
with 1001, checkpoint every room, close the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import sqlite3
from dataclasses import dataclass

import structlog

from statecast.server.auth import Authenticator, NoAuth
from statecast.server.cluster.node import ClusterNode
from statecast.server.config import Config
from statecast.server.http import HttpListener
from statecast.server.limits import TokenBucket, raise_open_file_limit
from statecast.server.manager import RoomManager
from statecast.server.metrics import Metrics
from statecast.server.quotas import Quotas, StoreBounds
from statecast.server.registry import RoomTypes
from statecast.server.rooms.document import DocumentRoom, PresenceDocumentRoom
from statecast.server.store import Store, open_store
from statecast.server.store.base import StoreUnavailable
from statecast.server.store.redis import RedisStore
from statecast.server.ws import WebSocketListener

log = structlog.get_logger()

#: Seconds between readings of the store's size (server/quotas.py's StoreBounds).
USAGE_INTERVAL = 1.0


class StartupError(Exception):
    """The server cannot start (a port in use, a store held elsewhere): one line that says
    what to do, and exit status 2."""


@dataclass(frozen=True, slots=True)
class Ports:
    ws: int
    http: int


def build_authenticator(config: Config) -> Authenticator:
    if config.auth == "jwt":
        from statecast.server.jwt_auth import JwtAuth

        auth: Authenticator = JwtAuth.from_config(config)
        return auth
    return NoAuth()


class App:
    def __init__(self, config: Config, store: Store | None = None) -> None:
        self.config = config
        self.metrics = Metrics()
        self.store = (
            store
            if store is not None
            else open_store(
                config.store,
                durability=config.durability,
                retain_diffs=config.history_diffs,
                wait_replicas=config.wait_replicas,
            )
        )
        default = PresenceDocumentRoom if config.document_presence else DocumentRoom
        self.room_types = RoomTypes.parse(config.room_types, default)
        for overlap in self.room_types.overlaps():
            log.warning(overlap)
        self.auth = build_authenticator(config)
        self.rooms = RoomManager(config, self.store, self.room_types, self.metrics)
        self.quotas = self.rooms.quotas = Quotas(config, self.metrics)
        self.bounds = self.rooms.bounds = StoreBounds(config, self.metrics)
        self._usage: asyncio.Task[None] | None = None
        self.cluster: ClusterNode | None = None
        if isinstance(self.store, RedisStore):
            self.cluster = self.rooms.cluster = ClusterNode(self.rooms, self.store)
        self.ws = WebSocketListener(self)
        if self.cluster is not None:
            ws = self.ws
            self.cluster.on_4009 = lambda sub: ws.take_over(sub.conn)
        self.http = HttpListener(self)
        self.ready = False
        self.ports: Ports | None = None
        self._stopped = asyncio.Event()

    def new_rate_limiter(self) -> TokenBucket:
        c = self.config
        return TokenBucket(c.action_rate, c.action_burst, c.rate_strikes)

    async def start(self) -> Ports:
        """Open the store and bind both ports; :class:`StartupError` (with everything opened
        so far closed again) when one of them cannot be had."""
        raise_open_file_limit(self.config.max_connections)
        if self.config.auth == "none":
            log.warning("auth is off: every client may join any room in any role (--auth none)")
        config = self.config
        try:
            await self.store.open()
        except sqlite3.OperationalError as exc:
            raise StartupError(
                f"the store {config.store} cannot be opened ({exc}): if another statecast "
                f"server uses it, stop that one or give this one another --store"
            ) from None
        try:
            await self._read_usage()  # the store's bounds hold from the first request on
            self._usage = asyncio.create_task(self._watch_usage(), name="store usage")
            if self.cluster is not None:
                await self.cluster.start()
            which = "--http-port"
            http_port = await self.http.start()
            which = "--port"
            ws_port = await self.ws.start()
        except OSError as exc:
            port = config.http_port if which == "--http-port" else config.port
            await self._close_started()
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"{which} {port}: the port is in use on {config.host} (another statecast "
                    f"serve?): stop it or choose another {which}"
                ) from None
            raise StartupError(f"{which} {port} on {config.host}: {exc}") from None
        self.ports = Ports(ws=ws_port, http=http_port)
        self.ready = True
        log.info(
            "serving",
            ws=f"ws://{self.config.host}:{ws_port}/rooms/{{room}}",
            http=f"http://{self.config.host}:{http_port}",
            store=self.config.store,
            durability=self.config.durability,
        )
        return self.ports

    async def _read_usage(self) -> None:
        try:
            self.bounds.update(await self.store.usage())
        except StoreUnavailable as exc:  # the last reading stands; the next one may do
            log.debug("store usage not read", error=str(exc))

    async def _watch_usage(self) -> None:
        """Read the store's size about once a second (``--max-store-bytes``, gauges)."""
        while True:
            await asyncio.sleep(USAGE_INTERVAL)
            await self._read_usage()

    async def _stop_usage(self) -> None:
        if self._usage is not None:
            self._usage.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._usage
            self._usage = None

    async def _close_started(self) -> None:
        await self._stop_usage()
        self.ws.close()
        await self.http.close()
        if self.cluster is not None:
            await self.cluster.close()
        await self.store.close()

    async def stop(self) -> None:
        """Graceful shutdown: nothing acknowledged is lost, every client is told 1001.

        A cluster node hands its rooms over first (checkpoint, lease released, so
        a follower takes each over at once) and tells its clients 1012: reconnect
        at once, to any node, and resume.
        """
        if not self.ready:
            return
        self.ready = False
        log.info("shutting down")
        await self.rooms.drain()
        if self.cluster is not None:
            await self.cluster.hand_over()
            log.info("rooms handed over: closing connections with 1012")
            await self.ws.close_all(1012, "this node is leaving: resume on another")
        self.ws.close()
        await self.ws.wait_closed()
        await self.rooms.close()
        if self.cluster is not None:
            await self.cluster.close()
        await self.http.close()
        await self._stop_usage()
        await self.store.close()
        self._stopped.set()
        log.info("stopped")

    async def serve_forever(self) -> None:
        """Run until SIGINT or SIGTERM, then shut down gracefully.

        The handlers go in before the server starts: a SIGTERM that follows the "serving"
        line at once is a graceful stop too, not the default action's exit."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
            await stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await self.stop()

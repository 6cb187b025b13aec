"""What one identity may cost: rooms created, connections held, actions, client ids.

Limits per connection or per client id are sidestepped by opening another
connection or inventing another id, which cost nothing. So the server also
counts per *identity*: the token's subject under ``--auth jwt``, otherwise the
remote address (the address a trusted proxy forwards, with ``--trusted-proxies``).

* ``--identity-rooms-per-minute``: rooms one identity may create (a token bucket
  of that many per minute, bursting to the same number);
* ``--identity-connections``: WebSocket connections one identity may hold;
* ``--identity-action-rate``: actions per second one identity may send, over all
  its connections, client ids and HTTP requests (bursting to twice that);
* ``--identity-write-rate``: bytes of actions per second one identity may send (the
  WebSocket frames and HTTP bodies that carry them, bursting to sixteen seconds' worth),
  so that large patches cannot grow state at the action rate times the message size;
* ``--room-clients-per-identity``: client ids one identity may have a room record
  for exactly-once under ``--auth none``, so throwaway ids from one address cannot
  fill ``--max-room-clients`` and lock a room against everyone else.

The tables are bounded: past :data:`IDENTITIES_HELD` identities the idle entries
are dropped (at worst a burst is granted again). Every refusal is counted in
``statecast_quota_refusals_total{quota}``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Final

import structlog

from statecast.server.config import Config
from statecast.server.limits import TokenBucket
from statecast.server.metrics import Metrics
from statecast.server.store.base import StoreUsage

log = structlog.get_logger()

#: Identities whose buckets are kept; past it, the full (idle) ones are forgotten.
IDENTITIES_HELD: Final = 100_000
#: ``--identity-write-rate`` bursts to this many seconds of writes.
WRITE_BURST_SECONDS: Final = 16

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_proxies(text: str) -> tuple[Network, ...]:
    """``--trusted-proxies``: addresses or networks, comma-separated (ValueError names one
    that is neither)."""
    networks: list[Network] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(
                f"{part!r} is not an address or network (such as 10.0.0.1 or 10.0.0.0/8)"
            ) from None
    return tuple(networks)


class Quotas:
    def __init__(self, config: Config, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.proxies = parse_proxies(config.trusted_proxies)
        self._rooms: dict[str, TokenBucket] = {}
        self._actions: dict[str, TokenBucket] = {}
        self._writes: dict[str, TokenBucket] = {}
        #: Open WebSocket connections per identity (entries at 0 are removed).
        self.connections: dict[str, int] = {}

    # --- who ---------------------------------------------------------------------------

    def identity(self, subject: str | None, peer: str | None, forwarded: str | None) -> str:
        """The identity a request counts against: ``sub:<subject>`` under ``--auth jwt`` with
        a token, else ``ip:<address>``; the address is the peer's, or, when the peer is a
        trusted proxy, the last address in its X-Forwarded-For that is not one."""
        if subject is not None and self.config.auth == "jwt":
            return f"sub:{subject}"
        address = peer or "unknown"
        if forwarded and self.proxies and self._trusted(address):
            for hop in reversed([h.strip() for h in forwarded.split(",")]):
                if not hop:
                    continue
                address = hop
                if not self._trusted(hop):
                    break
        return f"ip:{address}"

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.proxies)

    # --- rooms -------------------------------------------------------------------------

    def create_room(self, identity: str | None) -> str | None:
        """Spend one of ``identity``'s room creations; None if allowed, else why not."""
        rate = self.config.identity_rooms_per_minute
        if identity is None or rate <= 0:
            return None
        bucket = _bucket(self._rooms, identity, rate / 60.0, max(int(rate), 1))
        if bucket.take():
            return None
        return self._refused(
            "rooms",
            identity,
            f"this client created {rate:g} rooms in the last minute "
            f"(--identity-rooms-per-minute): wait, or use a room that exists",
        )

    # --- connections -------------------------------------------------------------------

    def connect(self, identity: str) -> str | None:
        """Count a WebSocket connection of ``identity``; None if allowed (then call
        :meth:`disconnect` when it ends), else why not."""
        cap = self.config.identity_connections
        held = self.connections.get(identity, 0)
        if cap and held >= cap:
            return self._refused(
                "connections",
                identity,
                f"this client holds {cap} connections (--identity-connections): close one",
            )
        self.connections[identity] = held + 1
        return None

    def disconnect(self, identity: str) -> None:
        held = self.connections.get(identity, 0) - 1
        if held > 0:
            self.connections[identity] = held
        else:
            self.connections.pop(identity, None)

    # --- actions -----------------------------------------------------------------------

    def act(self, identity: str | None) -> str | None:
        """Spend one of ``identity``'s actions; None if allowed, else why not."""
        rate = self.config.identity_action_rate
        if identity is None or rate <= 0:
            return None
        bucket = _bucket(self._actions, identity, rate, max(int(rate * 2), 1))
        if bucket.take():
            return None
        return self._refused(
            "actions",
            identity,
            f"over {rate:g} actions/s from this client (--identity-action-rate), "
            f"over all its connections and client ids",
        )

    def write(self, identity: str | None, size: int) -> str | None:
        """Spend ``size`` bytes of ``identity``'s writes; None if allowed, else why not."""
        rate = self.config.identity_write_rate
        if identity is None or rate <= 0:
            return None
        bucket = _bucket(self._writes, identity, rate, max(rate * WRITE_BURST_SECONDS, 1))
        if bucket.take(size):
            return None
        return self._refused(
            "writes",
            identity,
            f"over {rate} bytes/s of actions from this client (--identity-write-rate)",
        )

    # --- client ids in a room ----------------------------------------------------------

    def may_bring(self, introduced: dict[str, set[str]], identity: str | None, client: str) -> bool:
        """Whether ``identity`` may have one more client id recorded in a room, given what
        each identity ``introduced`` there; records ``client`` for it when it may."""
        cap = self.config.room_clients_per_identity
        if identity is None or not cap or self.config.auth != "none":
            return True
        mine = introduced.setdefault(identity, set())
        if client in mine:
            return True
        if len(mine) >= cap:
            self._refused("room_clients", identity, "too many client ids")
            return False
        mine.add(client)
        return True

    def _refused(self, quota: str, identity: str, message: str) -> str:
        self.metrics.quota_refusals.labels(quota).inc()
        # debug: a flood of refusals must not become a flood of log lines (the metric counts)
        log.debug("quota refused", quota=quota, identity=identity)
        return message


def _bucket(table: dict[str, TokenBucket], identity: str, rate: float, burst: int) -> TokenBucket:
    bucket = table.get(identity)
    if bucket is None:
        if len(table) >= IDENTITIES_HELD:
            _forget_idle(table)
        bucket = table[identity] = TokenBucket(rate, burst, 0)
    return bucket


def _forget_idle(table: dict[str, TokenBucket]) -> None:
    """Drop the buckets that have refilled (their identities cost nothing now); if none
    has, the oldest half."""
    idle = [k for k, b in table.items() if b.full()]
    victims: Iterable[str] = idle or list(table)[: len(table) // 2]
    for key in list(victims):
        del table[key]


#: Who is asking now: set by the WebSocket and HTTP sides around a call that may create a
#: room, so that the room manager spends that identity's creations (a context variable,
#: because the manager is reached through several layers that need not know about it).
requester: ContextVar[str | None] = ContextVar("statecast_requester", default=None)


class StoreBounds:
    """The store's size against ``--max-store-bytes`` and ``--max-stored-rooms``, as last
    read (the app reads it about once a second). While over a bound, no room is created and
    no room's state grows: actions that would grow it are refused ``too_large``."""

    def __init__(self, config: Config, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.usage: StoreUsage | None = None
        #: Why state may not grow now (None: it may).
        self.full: str | None = None

    def update(self, usage: StoreUsage) -> None:
        self.usage = usage
        self.metrics.store_bytes.set(usage.bytes)
        self.metrics.store_rooms.set(usage.rooms)
        cap = self.config.max_store_bytes
        full = None
        if cap and usage.bytes >= cap:
            full = (
                f"the store holds its maximum of {cap} bytes (--max-store-bytes): "
                f"no state may grow until something is removed or the bound is raised"
            )
        if full != self.full:
            if full is not None:
                log.error("the store is full: state may not grow", bytes=usage.bytes, max=cap)
            else:
                log.info("the store has room again", bytes=usage.bytes, max=cap)
        self.full = full

    def creation_refused(self) -> str | None:
        """Why no room may be created now (None: one may)."""
        if self.full is not None:
            return self.full
        usage, cap = self.usage, self.config.max_stored_rooms
        if cap and usage is not None and usage.rooms >= cap:
            return f"the store holds its maximum of {cap} rooms (--max-stored-rooms)"
        return None

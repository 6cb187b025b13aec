"""Server settings: one dataclass, from flags, then ``STATECAST_*`` variables, then defaults."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8765
    http_port: int = 8766
    store: str = "sqlite:data/statecast.db"
    durability: str = "ack"
    checkpoint_every: int = 1000
    max_message_bytes: int = 1 << 20
    hello_timeout: float = 10.0
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    history_diffs: int = 10_000
    history_bytes: int = 16 << 20
    tombstone_horizon: int = 100_000
    slow_high_water: int = 1 << 20
    slow_timeout: float = 30.0
    max_depth: int = 64
    create_rooms: bool = True
    compression: bool = False
    room_types: tuple[str, ...] = field(default_factory=tuple)
    log_level: str = "info"
    log_format: str = "auto"
    uvloop: bool = True
    leave_grace: float = 5.0
    document_presence: bool = False
    # auth and limits
    auth: str = "none"
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_algorithm: str = "HS256"
    public_spectators: bool = False
    action_rate: float = 50.0
    action_burst: int = 100
    rate_strikes: int = 20
    max_connections: int = 10_000
    max_room_connections: int = 0
    max_room_clients: int = 10_000
    max_rooms: int = 10_000
    idle_unload: float = 300.0
    max_state_bytes: int = 8 << 20
    max_store_bytes: int = 1 << 30
    max_stored_rooms: int = 100_000
    identity_rooms_per_minute: float = 60.0
    identity_connections: int = 100
    identity_action_rate: float = 200.0
    identity_write_rate: int = 1 << 20
    room_clients_per_identity: int = 100
    trusted_proxies: str = ""
    max_key_length: int = 1024
    http_max_body: int = 1 << 20
    http_idle_timeout: float = 75.0
    # cluster (a redis:// store)
    lease_ttl: float = 3.0
    wait_replicas: int = 0
    workers: int = 1
    reuse_port: bool = False
    cors_origins: str = ""
    allowed_hosts: str = ""
    allowed_origins: str = ""

    def __post_init__(self) -> None:
        if self.cors_origins:
            from statecast.server.cors import parse_origins

            parse_origins(self.cors_origins)  # a ValueError names the bad origin
        if self.trusted_proxies:
            from statecast.server.quotas import parse_proxies

            try:
                parse_proxies(self.trusted_proxies)
            except ValueError as exc:
                raise ValueError(f"--trusted-proxies (STATECAST_TRUSTED_PROXIES): {exc}") from None
        for name, rule in _RULES.items():
            problem = rule.check(getattr(self, name))
            if problem is not None:
                raise ValueError(f"{flag_name(name)} ({env_name(name)}): {problem}")
        if self.port and self.port == self.http_port:
            raise ValueError(
                f"--port and --http-port are both {self.port}: give the HTTP side another port"
            )


@dataclass(frozen=True)
class _Rule:
    """What a setting may be: a range (``low`` and ``high`` included, ``above`` excluded)
    or one of ``choices``."""

    low: float | None = None
    high: float | None = None
    above: float | None = None
    choices: tuple[str, ...] = ()

    def check(self, value: Any) -> str | None:
        if self.choices:
            return None if value in self.choices else f"{value!r} is not one of {self.choices}"
        if self.above is not None and not value > self.above:
            return f"{value} must be above {self.above:g}"
        if self.low is not None and value < self.low:
            return f"{value} must be at least {self.low:g}"
        if self.high is not None and value > self.high:
            return f"{value} must be at most {self.high:g}"
        return None


_PORT = _Rule(low=0, high=65535)
_POSITIVE = _Rule(above=0)
_COUNT = _Rule(low=0)
_RULES: dict[str, _Rule] = {
    "port": _PORT,
    "http_port": _PORT,
    "durability": _Rule(choices=("ack", "async")),
    "checkpoint_every": _Rule(low=1),
    # docs/protocol.md §4.3: a server accepts messages of at least 64 KiB.
    "max_message_bytes": _Rule(low=64 * 1024),
    "hello_timeout": _POSITIVE,
    "ping_interval": _COUNT,  # 0: no keep-alive pings
    "ping_timeout": _COUNT,  # 0: no timeout
    "history_diffs": _COUNT,
    "history_bytes": _COUNT,
    "tombstone_horizon": _COUNT,
    "slow_high_water": _Rule(low=1),
    "slow_timeout": _POSITIVE,
    "max_depth": _Rule(low=1),
    "log_level": _Rule(choices=("debug", "info", "warning", "error")),
    "log_format": _Rule(choices=("auto", "json", "console")),
    "leave_grace": _COUNT,
    "auth": _Rule(choices=("none", "jwt")),
    "jwt_algorithm": _Rule(choices=("HS256", "RS256")),
    "action_rate": _COUNT,  # 0: unlimited
    "action_burst": _Rule(low=1),
    "rate_strikes": _COUNT,
    "max_connections": _Rule(low=1),
    "max_room_connections": _COUNT,
    "max_room_clients": _COUNT,
    "max_rooms": _Rule(low=1),
    "idle_unload": _COUNT,
    "max_state_bytes": _COUNT,
    "max_store_bytes": _COUNT,
    "max_stored_rooms": _COUNT,
    "identity_rooms_per_minute": _COUNT,
    "identity_connections": _COUNT,
    "identity_action_rate": _COUNT,
    "identity_write_rate": _COUNT,
    "room_clients_per_identity": _COUNT,
    "max_key_length": _COUNT,
    "http_max_body": _Rule(low=1),
    "http_idle_timeout": _POSITIVE,
    "lease_ttl": _POSITIVE,
    "wait_replicas": _COUNT,
    "workers": _Rule(low=1),
}


def flag_name(name: str) -> str:
    return "--room-type" if name == "room_types" else "--" + name.replace("_", "-")


_HELP: dict[str, str] = {
    "host": "address both listeners bind",
    "port": "WebSocket port",
    "http_port": "HTTP port (state, changefeed, actions, /healthz, /metrics)",
    "store": "memory | sqlite:PATH | redis://[:PASSWORD@]HOST:PORT/DB (rediss:// for TLS): "
    "every server on one Redis is one cluster",
    "durability": "ack: ACK once the diff is committed; async: publish and ACK before the "
    "commit (lower latency; a crash loses the last actions and rooms start a new epoch)",
    "checkpoint_every": "diffs between state checkpoints in the store",
    "max_message_bytes": "largest WebSocket message accepted (close 1009 above)",
    "hello_timeout": "seconds for the WebSocket handshake, then again for the HELLO (close 4000)",
    "ping_interval": "seconds between keep-alive pings (0: none)",
    "ping_timeout": "seconds to wait for a pong",
    "history_diffs": "diffs held per room for replay",
    "history_bytes": "bytes of diffs held per room for replay",
    "tombstone_horizon": "diffs back that a resume can still get the net change for "
    "(PATCH): which entries changed, deletions included, is kept that far (0: since the "
    "room loaded)",
    "slow_high_water": "unsent bytes after which a subscriber is skipped ahead by SNAPSHOT",
    "slow_timeout": "seconds a skipped subscriber may take to drain before close 4008",
    "max_depth": "nesting levels allowed in state and paths",
    "create_rooms": "create rooms on first join (else close 4004)",
    "compression": "negotiate permessage-deflate (costs encode-once fan-out)",
    "room_types": "PATTERN=module:Class, repeatable (env: comma-separated)",
    "log_level": "debug | info | warning | error",
    "log_format": "auto | json | console",
    "uvloop": "run on uvloop",
    "leave_grace": "seconds an agent may be disconnected before it leaves (on_leave); "
    "a reconnect within it is neither a leave nor a join",
    "document_presence": "the built-in document room records present agents under 'presence'",
    "auth": "none | jwt",
    "jwt_secret": "HS256 secret (env STATECAST_JWT_SECRET)",
    "jwt_public_key": "path to a PEM public key for RS256",
    "jwt_algorithm": "HS256 | RS256",
    "public_spectators": "let spectators read without a token when auth is on",
    "action_rate": "actions per second per connection (token bucket refill; 0: unlimited)",
    "action_burst": "token bucket size",
    "rate_strikes": "refusals within about a second that close 4029 (0: never close)",
    "max_connections": "WebSocket connections in total",
    "max_room_connections": "WebSocket connections per room (0: bounded only by --max-connections)",
    "max_room_clients": "client ids a room records for exactly-once under --auth none "
    "(0: unlimited)",
    "max_rooms": "rooms held in memory at once (idle rooms unload, see --idle-unload)",
    "idle_unload": "seconds an idle room (no connection, no request) stays in memory before "
    "it is checkpointed and unloaded (0: only when --max-rooms needs the space)",
    "max_state_bytes": "encoded size a room's state may reach (too_large)",
    "max_store_bytes": "bytes the store may hold (SQLite: its file; Redis: used_memory; "
    "memory: states and logs); past it no room is created and no state grows (0: unlimited)",
    "max_stored_rooms": "rooms the store may hold; past it no room is created (0: unlimited)",
    "identity_rooms_per_minute": "rooms one client (token subject, else address) may create "
    "per minute (0: unlimited)",
    "identity_connections": "WebSocket connections one client (token subject, else address) "
    "may hold (0: unlimited)",
    "identity_action_rate": "actions per second one client (token subject, else address) may "
    "send over all its connections and client ids, bursting to twice it (0: unlimited)",
    "identity_write_rate": "bytes of actions per second one client (token subject, else "
    "address) may send, bursting to 16 s of it (0: unlimited)",
    "room_clients_per_identity": "client ids one address may have a room record under "
    "--auth none (0: unlimited)",
    "trusted_proxies": "proxies whose X-Forwarded-For names the client's address, "
    "comma-separated addresses or networks (default: none, the peer address counts)",
    "max_key_length": "longest map key or path segment, in characters (too_large)",
    "http_max_body": "largest HTTP request body",
    "http_idle_timeout": "seconds an idle HTTP keep-alive connection stays open",
    "lease_ttl": "seconds a room's owner lease lasts in Redis (renewed every third of it); "
    "an owner that dies is replaced within about this long",
    "workers": "server processes sharing the ports (SO_REUSEPORT); above 1 needs a redis:// "
    "store; a worker that dies is restarted",
    "reuse_port": "bind with SO_REUSEPORT so several processes share the ports (--workers sets it)",
    "wait_replicas": "with Redis: WAIT until this many replicas have each batch before ACK "
    "(0: ACK once the primary ran the write)",
    "allowed_hosts": "Host names requests may carry, comma-separated, or * for any (default: "
    "localhost, 127.0.0.1 and ::1 when bound to loopback, else any): a foreign Host is 403",
    "allowed_origins": "origins whose pages may open a WebSocket or POST an action, "
    "comma-separated, or * (default: this server's own pages and --cors-origins; any when "
    "bound elsewhere than loopback without --allowed-hosts)",
    "cors_origins": "origins whose pages may read the HTTP side (CORS): a comma-separated list "
    "such as https://app.example,http://localhost:3000, or * for any; empty: CORS off",
}


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def env_name(name: str) -> str:
    return "STATECAST_" + name.upper()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        default = Config.__dataclass_fields__[f.name].default
        help_text = f"{_HELP.get(f.name, '')} [env {env_name(f.name)}]"
        if f.name == "room_types":
            parser.add_argument("--room-type", dest=f.name, action="append", help=help_text)
        elif f.type == "bool":
            parser.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{help_text} (default {default})",
            )
        else:
            parser.add_argument(
                flag, dest=f.name, default=None, help=f"{help_text} (default {default})"
            )


def _convert(type_name: str, raw: Any) -> Any:
    if raw is None:
        return None
    if type_name == "int":
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a whole number") from None
    if type_name == "float":
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{raw!r} is not a finite number")
        return value
    if type_name == "bool":
        return raw if isinstance(raw, bool) else _parse_bool(raw)
    if type_name == "str | None":
        return str(raw) or None
    return str(raw)


def load_config(
    args: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Config:
    """Flags win over ``STATECAST_*`` variables, which win over the defaults."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Config):
        raw: Any = getattr(args, f.name, None) if args is not None else None
        source = flag_name(f.name)
        if raw is None and env_name(f.name) in env:
            raw = env[env_name(f.name)]
            source = env_name(f.name)
            if f.name == "room_types":
                raw = [s for s in raw.split(",") if s.strip()]
        if raw is None:
            continue
        if f.name == "room_types":
            values[f.name] = tuple(raw)
            continue
        try:
            values[f.name] = _convert(str(f.type), raw)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
    values.update(overrides)
    return Config(**values)


def describe(config: Config) -> Sequence[tuple[str, str, str, str]]:
    """(flag, env, default, help) for every setting: the README's config table."""
    rows = []
    for f in fields(Config):
        default = Config.__dataclass_fields__[f.name].default
        if f.name == "room_types":
            default = ()
        rows.append(
            (
                flag_name(f.name),
                env_name(f.name),
                repr(default),
                _HELP.get(f.name, ""),
            )
        )
    return rows

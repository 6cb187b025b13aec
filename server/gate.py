"""Which ``Host`` and ``Origin`` a request may carry: DNS rebinding and cross-site writes.

A server on a developer's loopback address is reachable from every page the developer
opens: a page on another origin can make the browser POST an action, open a WebSocket
and act, or, through DNS rebinding (its own name resolving to 127.0.0.1), read it all
as same-origin. Two checks close that:

* **Host** (``--allowed-hosts``): a request whose ``Host`` names another host is refused
  with 403. By default, when the server binds a loopback address, only ``localhost``,
  ``127.0.0.1``, ``::1`` and the bound address are accepted; bound elsewhere, any host
  is (the public name is not known here: set ``--allowed-hosts``).
* **Origin** (``--allowed-origins``): a WebSocket handshake, or a POST, that carries an
  ``Origin`` header is refused with 403 unless that origin is allowed: by default the
  server's own pages (``http://HOST:HTTP_PORT`` for every allowed host) and the
  ``--cors-origins``; bound elsewhere than loopback with no ``--allowed-hosts``, any.
  Clients that are not browsers send no ``Origin`` and are not affected.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from statecast.server.app import App

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The host of a ``Host`` header value (no port, no IPv6 brackets), lowercased."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Gate:
    def __init__(self, app: App) -> None:
        self.app = app
        #: The allowed host names (None: any), fixed by the configuration.
        self.hosts = _allowed_hosts(app)
        #: The allowed origins, once the HTTP port they name is bound.
        self._origins: frozenset[str] | None = None

    def host_problem(self, header: str | None) -> str | None:
        hosts = self.hosts
        if hosts is None:
            return None
        name = host_name(header or "")
        if name in hosts:
            return None
        return (
            f"Host {name or '(none)'!r} is not one this server answers to: "
            f"add it to --allowed-hosts (now {', '.join(sorted(hosts))})"
        )

    def origin_problem(self, origin: str | None) -> str | None:
        """None when a request with this ``Origin`` header (or none) may change state."""
        if origin is None:
            return None  # not a browser, or a same-origin GET: nothing to check
        allowed = self._allowed_origins()
        if allowed is None or origin in allowed:
            return None
        return (
            f"Origin {origin!r} may not act here: add it to --allowed-origins "
            "(or --cors-origins) if its pages should"
        )

    def _allowed_origins(self) -> frozenset[str] | None:
        """The allowed origins (None: any); kept once the HTTP port is known."""
        if self._origins is not None:
            return self._origins
        config = self.app.config
        if config.allowed_origins:
            allowed = {o.strip() for o in config.allowed_origins.split(",")}
        elif self.hosts is None:
            return None
        else:
            ports = self.app.ports
            http_port = ports.http if ports is not None else config.http_port
            names = [f"[{h}]" if ":" in h else h for h in self.hosts]
            allowed = {f"{scheme}://{h}:{http_port}" for h in names for scheme in ("http", "https")}
            allowed |= {o.strip() for o in config.cors_origins.split(",") if o.strip()}
        if "*" in allowed:
            return None
        if self.app.ports is not None:
            self._origins = frozenset(allowed)
        return frozenset(allowed)


def _allowed_hosts(app: App) -> frozenset[str] | None:
    config = app.config
    if config.allowed_hosts:
        listed = frozenset(h.strip().lower() for h in config.allowed_hosts.split(","))
        return None if "*" in listed else listed
    if _is_loopback(config.host):
        return frozenset((*LOOPBACK_NAMES, config.host.lower()))
    return None

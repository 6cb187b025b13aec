"""``statecast mcp``: the command line, registered through the ``statecast.commands``
entry points.

Registering imports nothing of the MCP SDK, so ``statecast --help`` works without the
``mcp`` extra; running the command without it says how to install it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from statecast.protocol.views import check_prefixes

DESCRIPTION = """\
Give an LLM agent a seat in a room over the Model Context Protocol: the room's actions
as tools (each taking effect exactly once, also when the host retries a call), its state
as a resource, and what changed since a seq. Over stdio by default (what agent hosts
launch); --http PORT serves MCP's Streamable HTTP at http://127.0.0.1:PORT/mcp instead.
See docs/agents.md.
"""

INSTALL_HINT = "statecast mcp needs the MCP SDK: pip install 'statecast[mcp]'"


def default_http_url(ws_url: str) -> str:
    """The HTTP side next to a WebSocket URL: same host, port + 1 (``statecast serve``'s
    defaults are 8765 and 8766)."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    port = parts.port or (443 if scheme == "https" else 80)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return urlunsplit((scheme, f"{host}:{port + 1}", "", "", ""))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        required=True,
        help="the statecast server's WebSocket URL, e.g. ws://127.0.0.1:8765",
    )
    parser.add_argument("--room", required=True, help="the room the agent sits in")
    parser.add_argument(
        "--client",
        required=True,
        help="the agent's client id (one live connection per id and room: give each agent its own)",
    )
    parser.add_argument("--token", help="a JWT for the statecast server (with --auth jwt)")
    parser.add_argument(
        "--role",
        choices=("agent", "spectator"),
        default="agent",
        help="spectator: a read-only seat (its action tools are refused 'forbidden')",
    )
    parser.add_argument(
        "--http-url",
        help="the statecast server's HTTP side (default: the --url host, its port + 1)",
    )
    parser.add_argument(
        "--http",
        type=int,
        metavar="PORT",
        help="serve MCP's Streamable HTTP on 127.0.0.1:PORT (0: a free port) instead of stdio",
    )
    parser.add_argument(
        "--http-host",
        default="127.0.0.1",
        help="the address --http listens on (default 127.0.0.1)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        help="seconds to wait for the statecast server before a tool says it is unreachable",
    )
    parser.add_argument(
        "--call-timeout",
        type=float,
        default=30.0,
        help="seconds an action tool waits for its outcome before answering that it is pending",
    )
    parser.add_argument(
        "--keys",
        metavar="FILE",
        help="keep idempotency keys in this SQLite file, so that a retry after the process "
        "restarted (a stdio host relaunching it) still answers the first outcome",
    )
    parser.add_argument(
        "--view",
        metavar="JSON",
        help='the part of the room the seat sees, as JSON path prefixes (\'[["board"], '
        '["players", "a1"]]\'; docs/protocol.md §5.12): get_state, changes_since, '
        "wait_for_change and the resource hold only that part (default: all it may see)",
    )
    parser.add_argument("--log-level", default="info", help="debug, info, warning or error")


def parse_view(text: str | None) -> list[list[str]] | None:
    """``--view`` as prefixes; raises ValueError naming the rule."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    return check_prefixes(value, "--view")


def check_arguments(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments, in one line naming the flag; None if nothing."""
    if urlsplit(args.url).scheme not in ("ws", "wss"):
        return f"--url {args.url!r} is not a ws:// or wss:// URL"
    if args.http_url is not None and urlsplit(args.http_url).scheme not in ("http", "https"):
        return f"--http-url {args.http_url!r} is not an http:// or https:// URL"
    if args.http is not None and not 0 <= args.http <= 65535:
        return f"--http {args.http} is not a port (0 to 65535)"
    try:
        parse_view(args.view)
    except ValueError as exc:
        return str(exc)
    for flag in ("connect_timeout", "call_timeout"):
        value = getattr(args, flag)
        if not 0 < value <= 3600:
            return f"--{flag.replace('_', '-')} {value:g} must be above 0 and at most 3600 seconds"
    return None


def _run(args: argparse.Namespace) -> int:
    problem = check_arguments(args)
    if problem is not None:
        sys.stderr.write(f"statecast mcp: {problem}\n")
        return 2
    try:
        import mcp  # noqa: F401
    except ImportError:
        sys.stderr.write(f"{INSTALL_HINT}\n")
        return 2
    from statecast.mcp_server.main import run

    return run(args)


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "mcp",
        help="an MCP server giving an LLM agent a seat in a room (needs statecast[mcp])",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=_run)
